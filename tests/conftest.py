"""Shared fixtures: the embedded model is loaded once per test session."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def smol_backend():
    """The embedded SmolLM2-135M-Instruct through the transformers backend (CPU, fp32)."""
    from trustee_lite.lm import build_backend
    from trustee_lite.recipe import PolicyConfig

    backend = build_backend("transformers", PolicyConfig(batch_size=16), "policy")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def smol_tokenizer(smol_backend):
    return smol_backend.tokenizer


@pytest.fixture(scope="session")
def llama_backend():
    """The embedded model through llama.cpp."""
    from trustee_lite.lm import build_backend
    from trustee_lite.recipe import SimulatorConfig

    backend = build_backend("llama_cpp", SimulatorConfig(n_ctx=2048), "simulator")
    yield backend
    backend.close()
