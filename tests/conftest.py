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
    from trustee_lite.config import PolicyConfig
    from trustee_lite.lm import build_backend

    backend = build_backend("transformers", PolicyConfig(batch_size=16), "policy")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def smol_tokenizer(smol_backend):
    return smol_backend.tokenizer


@pytest.fixture(scope="session")
def llama_backend():
    """The embedded model through llama.cpp."""
    from trustee_lite.config import SimulatorConfig
    from trustee_lite.lm import build_backend

    backend = build_backend("llama_cpp", SimulatorConfig(n_ctx=2048), "simulator")
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def family_dirs(tmp_path_factory, smol_tokenizer):
    """Local folders of tiny Qwen3, Qwen2, Llama and Gemma 2 models with their families' templates
    (tests/model_families.py), built once per test session."""
    from model_families import FAMILIES, build_family

    root = tmp_path_factory.mktemp("families")
    return {name: build_family(name, smol_tokenizer, root / name) for name in FAMILIES}


@pytest.fixture(scope="session")
def family_tokenizers(family_dirs):
    from transformers import AutoTokenizer

    return {name: AutoTokenizer.from_pretrained(folder) for name, folder in family_dirs.items()}
