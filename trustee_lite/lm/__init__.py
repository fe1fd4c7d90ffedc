"""Generation backends behind one interface, and the batching service in front of them."""

from __future__ import annotations

from trustee_lite.config import ModelConfig
from trustee_lite.lm.base import Backend, Completion, ContextLimit, GenerationError, GenRequest, Sampling
from trustee_lite.lm.service import GenerationService

__all__ = ["Backend", "Completion", "ContextLimit", "GenerationError", "GenRequest", "GenerationService", "Sampling", "build_backend"]


def build_backend(backend: str, cfg: ModelConfig, place: str, adapter: str | None = None, **policy) -> Backend:
    """Load a backend; heavy and optional packages are imported only here, when needed.
    `policy` (lora, seed, gradient_checkpointing) goes to the transformers backend of the policy."""
    if backend == "transformers":
        from trustee_lite.lm.hf import TransformersBackend

        return TransformersBackend(cfg, place, adapter=adapter, **policy)
    if backend == "openai":
        from trustee_lite.lm.remote import OpenAIBackend

        return OpenAIBackend(cfg, place)
    if backend == "llama_cpp":
        from trustee_lite.lm.llama_cpp import LlamaCppBackend

        return LlamaCppBackend(cfg, place)
    raise ValueError(f"unknown backend {backend!r}")
