"""A converted copy of a small GGUF model, so transformers reads it once.

transformers reads a GGUF file by rebuilding a fast tokenizer from its vocabulary and
dequantising every tensor: for the embedded 135M model about 44 s on 2 cores, at every start of
every command. The first load saves the result (`save_pretrained`, safetensors) under
`$TRUSTEE_LITE_CACHE` (default `~/.cache/trustee_lite`); later loads read that in about
half a second. The copy is keyed by the file's content (its name, size and a hash of its first
MiB: the header, vocabulary and first tensors), the dtype and the transformers version, so a
changed file or library never meets an old copy, and every environment with that transformers
version shares one copy (a fresh install no longer adds 517 MB). Writing a copy removes the
stale ones of the same file, dtype and version (the file changed since). Only files up to
MAX_BYTES are kept (a dequantised copy is several times the GGUF's size): large models are
read from their GGUF each time. A copy that cannot be written is skipped, never an error.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BYTES = 512 * 2**20
COMPLETE = "trustee_lite_complete"  # written last: a folder without it is not used


def cache_root() -> Path:
    return Path(os.environ.get("TRUSTEE_LITE_CACHE") or Path.home() / ".cache" / "trustee_lite")


HEADER_BYTES = 2**20  # hashed: a GGUF file's header and vocabulary, and its first tensors


def folder(gguf: Path, dtype) -> Path | None:
    """Where the converted copy of `gguf` at `dtype` lives, or None for a file too large to keep."""
    size = gguf.stat().st_size
    if size > MAX_BYTES:
        return None
    with gguf.open("rb") as f:
        content = hashlib.sha256(f.read(HEADER_BYTES)).hexdigest()[:16]
    return cache_root() / "converted" / f"{gguf.stem}-{size}-{content}-{_suffix(dtype)}"


def any_copy(gguf: Path) -> Path | None:
    """A complete converted copy of `gguf` at any dtype and transformers version: its config and
    tokenizer are the file's (what `check` reads, in a second instead of the GGUF's 20)."""
    if gguf.stat().st_size > MAX_BYTES:
        return None
    with gguf.open("rb") as f:
        content = hashlib.sha256(f.read(HEADER_BYTES)).hexdigest()[:16]
    prefix = f"{glob.escape(gguf.stem)}-{gguf.stat().st_size}-{content}-"
    return next((p for p in sorted((cache_root() / "converted").glob(prefix + "*")) if ready(p)), None)


def _suffix(dtype) -> str:
    import transformers

    return f"{str(dtype).removeprefix('torch.')}-transformers{transformers.__version__}"


def _stale(path: Path) -> list[Path]:
    """Other copies of the same file name, dtype and transformers version: of an earlier
    content of the file (or keyed by its modification time, as copies were before)."""
    stem, _, _, dtype, version = path.name.rsplit("-", 4)  # the stem may hold dashes; the rest does not
    return [p for p in path.parent.glob(f"{glob.escape(stem)}-*-*-{dtype}-{version}")
            if p != path and p.is_dir() and p.name.rsplit("-", 4)[0] == stem]


def ready(path: Path | None) -> bool:
    return path is not None and (path / COMPLETE).is_file()


def save(path: Path, model, tokenizer) -> None:
    """Write the copy beside its place and move it in whole (another process may race us)."""
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        temporary.mkdir(parents=True, exist_ok=True)
        _save_dequantised(model, temporary)
        tokenizer.save_pretrained(temporary)
        (temporary / COMPLETE).write_text("")
        if not path.exists():
            os.replace(temporary, path)
        for old in _stale(path):
            shutil.rmtree(old, ignore_errors=True)
    except (OSError, ValueError) as err:
        log.info("no converted copy of the model at %s: %s", path, err)
    finally:
        shutil.rmtree(temporary, ignore_errors=True)


def _save_dequantised(model, where: Path) -> None:
    """save_pretrained refuses a model read from GGUF (it still carries the GGUF "quantizer"),
    although its weights are plain tensors by now: save it without that mark, then put it back."""
    quantizer = getattr(model, "hf_quantizer", None)
    marked = "quantization_config" in model.config.__dict__
    mark = model.config.__dict__.pop("quantization_config", None)
    model.hf_quantizer = None
    try:
        model.save_pretrained(where)
    finally:
        model.hf_quantizer = quantizer
        if marked:
            model.config.quantization_config = mark
