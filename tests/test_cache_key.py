"""The simulation cache key changes with every input that decides an answer, and only with those."""

from __future__ import annotations

import pytest

from trustee_lite.env.simulator import cache_key
from trustee_lite.lm import Sampling

BASE = dict(
    backend="llama_cpp", model="SmolLM2-135M-Instruct.Q4_1.gguf:98362432", role="user_simulator",
    messages=({"role": "user", "content": "hello"},), schema={"type": "object"},
    sampling=Sampling(max_new_tokens=64, temperature=0.7, top_p=0.95, seed=11),
)

CHANGES = {
    "backend": dict(backend="transformers"),
    "model": dict(model="Qwen3-8B-Q4_K_M.gguf:5027784992"),
    "role": dict(role="tool_simulator"),
    "prompt": dict(messages=({"role": "user", "content": "hello!"},)),
    "prompt role": dict(messages=({"role": "system", "content": "hello"},)),
    "schema": dict(schema={"type": "object", "required": ["x"]}),
    "max_new_tokens": dict(sampling=Sampling(max_new_tokens=65, temperature=0.7, top_p=0.95, seed=11)),
    "temperature": dict(sampling=Sampling(max_new_tokens=64, temperature=0.8, top_p=0.95, seed=11)),
    "top_p": dict(sampling=Sampling(max_new_tokens=64, temperature=0.7, top_p=0.9, seed=11)),
    "seed": dict(sampling=Sampling(max_new_tokens=64, temperature=0.7, top_p=0.95, seed=12)),
}


def test_same_inputs_same_key():
    assert cache_key(**BASE) == cache_key(**dict(BASE))
    assert len(cache_key(**BASE)) == 64  # sha256 hex


@pytest.mark.parametrize("what", sorted(CHANGES))
def test_any_change_changes_the_key(what):
    assert cache_key(**{**BASE, **CHANGES[what]}) != cache_key(**BASE)


def test_key_does_not_depend_on_dict_order():
    reordered = {**BASE, "schema": {"required": ["x"], "type": "object"}}
    original = {**BASE, "schema": {"type": "object", "required": ["x"]}}
    assert cache_key(**reordered) == cache_key(**original)
