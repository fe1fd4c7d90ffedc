"""Where a model's weights are: the embedded GGUF, a local file or folder, or a cached hub id."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trustee_lite.config import EMBEDDED, ModelConfig
from trustee_lite.lm.embedded import embedded_gguf


@dataclass(frozen=True)
class ModelLocation:
    source: str  # a local folder/file path or a hub id
    gguf_file: str | None  # the GGUF file name inside `source` (a folder), if any
    model_id: str  # stable identity for the cache key (file name and size, not the install path)

    @property
    def gguf_path(self) -> Path | None:
        if self.gguf_file is None:
            return None
        return Path(self.source) / self.gguf_file


def locate(cfg: ModelConfig) -> ModelLocation:
    """Resolve the recipe's model reference (already checked to exist by the recipe loader)."""
    if cfg.model == EMBEDDED:
        return _gguf(embedded_gguf())
    path = Path(cfg.model)
    if path.is_file():
        return _gguf(path)
    if cfg.gguf_file is not None:
        return _gguf(path / cfg.gguf_file)
    return ModelLocation(source=cfg.model, gguf_file=None, model_id=cfg.model)


def _gguf(file: Path) -> ModelLocation:
    size = file.stat().st_size if file.is_file() else 0
    return ModelLocation(source=str(file.parent), gguf_file=file.name, model_id=f"{file.name}:{size}")
