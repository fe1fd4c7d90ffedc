"""Generation backends behind one interface (base.Backend), and the batching service in front of them."""

from __future__ import annotations

from importlib import import_module

from trustee_lite.config import ModelConfig
from trustee_lite.lm.base import Backend, Completion, ContextLimit, GenerationError, GenRequest, Sampling
from trustee_lite.lm.service import GenerationService

__all__ = ["Backend", "Completion", "ContextLimit", "GenerationError", "GenRequest", "GenerationService", "Sampling",
           "backend_class", "build_backend"]

# The recipe's backend names (config.BACKENDS) -> module:class. A module imports its heavy and
# optional packages only when a backend is made, so importing a class here is cheap.
IMPLEMENTATIONS = {
    "transformers": "trustee_lite.lm.hf:TransformersBackend",
    "llama_cpp": "trustee_lite.lm.llama_cpp:LlamaCppBackend",
    "openai": "trustee_lite.lm.remote:OpenAIBackend",
}


def backend_class(name: str) -> type[Backend]:
    """The class of a backend the recipe names."""
    if name not in IMPLEMENTATIONS:
        raise ValueError(f"unknown backend {name!r}")
    module, _, cls = IMPLEMENTATIONS[name].partition(":")
    return getattr(import_module(module), cls)


def build_backend(backend: str, cfg: ModelConfig, place: str, **policy) -> Backend:
    """Load a backend. `policy` (adapter, lora, seed, gradient_checkpointing) goes to the
    transformers backend of the policy."""
    from trustee_lite.progress import doing

    doing(f"loading {place.rsplit(': ', 1)[-1]} model {cfg.model} ({backend})")
    return backend_class(backend)(cfg, place, **policy)
