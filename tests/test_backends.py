"""The two local backends on the embedded model: batching does not change a request's tokens,
log-probs are real, an adapter can be switched off per call, llama.cpp obeys the JSON schema."""

from __future__ import annotations

import copy
import json
import math
import re

from jsonschema import validate

from trustee_lite.lm import GenRequest, Sampling

QUESTIONS = ["What is the capital of France?", "Name a fruit.", "Say hello.", "Count to three."]


def policy_requests(temperature=1.0, top_p=0.9, n=24):
    return [GenRequest(messages=({"role": "user", "content": q},), sampling=Sampling(n, temperature, top_p, seed=i),
                       logprobs=True) for i, q in enumerate(QUESTIONS)]


def test_batched_generation_equals_one_at_a_time(smol_backend):
    requests = policy_requests()
    alone = [smol_backend.generate_batch([r])[0] for r in requests]
    together = smol_backend.generate_batch(requests)
    assert [a.token_ids for a in alone] == [t.token_ids for t in together]
    for a, t in zip(alone, together):
        assert all(abs(x - y) < 1e-3 for x, y in zip(a.logprobs, t.logprobs))


def test_same_seed_same_tokens_other_seed_other_tokens(smol_backend):
    request = policy_requests()[0]
    again = smol_backend.generate_batch([request, request])
    other = smol_backend.generate_batch([GenRequest(messages=request.messages, sampling=Sampling(24, 1.0, 0.9, seed=99))])
    assert again[0].token_ids == again[1].token_ids
    assert other[0].token_ids != again[0].token_ids


def test_completion_fields_are_consistent(smol_backend):
    for c in smol_backend.generate_batch(policy_requests(n=16)):
        assert len(c.token_ids) == c.num_tokens == len(c.logprobs) <= 16
        assert all(lp <= 0.0 and math.isfinite(lp) for lp in c.logprobs)
        assert c.finish_reason == ("stop" if c.ended_with_eos else "length")
        if c.ended_with_eos:
            assert c.token_ids[-1] in smol_backend.eos_ids


def test_per_row_token_limits_in_one_batch(smol_backend):
    requests = [GenRequest(messages=({"role": "user", "content": "Write a long story about a dragon."},),
                           sampling=Sampling(n, 1.0, 1.0, seed=5)) for n in (3, 11)]
    short, long = smol_backend.generate_batch(requests)
    assert short.num_tokens <= 3 and long.num_tokens <= 11
    assert long.token_ids[: short.num_tokens] == short.token_ids  # same seed: the short one is a prefix


def test_greedy_equals_argmax_decoding(smol_backend):
    req = GenRequest(messages=({"role": "user", "content": "Say hello."},), sampling=Sampling(12, 0.0, 1.0, seed=1))
    a, b = smol_backend.generate_batch([req, GenRequest(messages=req.messages, sampling=Sampling(12, 0.0, 1.0, seed=2))])
    assert a.token_ids == b.token_ids  # temperature 0 ignores the seed


def test_adapter_can_be_switched_off_for_one_call(smol_backend, tmp_path):
    from peft import LoraConfig, get_peft_model

    # A random (non-zero) LoRA adapter, saved in PEFT's standard layout.
    lora = get_peft_model(copy.deepcopy(smol_backend.model),
                          LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()

    with_adapter = copy.deepcopy(smol_backend)
    with_adapter.load_adapter(str(tmp_path / "adapter"))
    sampling = Sampling(16, 0.0, 1.0, seed=0)
    messages = ({"role": "user", "content": "What is the capital of France?"},)
    base = smol_backend.generate_batch([GenRequest(messages=messages, sampling=sampling, logprobs=True)])[0]
    off = with_adapter.generate_batch([GenRequest(messages=messages, sampling=sampling, adapter=False, logprobs=True)])[0]
    on = with_adapter.generate_batch([GenRequest(messages=messages, sampling=sampling, adapter=True, logprobs=True)])[0]
    assert off.token_ids == base.token_ids
    assert on.token_ids != base.token_ids
    assert with_adapter.batch_key(GenRequest(messages=messages, sampling=sampling, adapter=False)) != \
        with_adapter.batch_key(GenRequest(messages=messages, sampling=sampling, adapter=True))


def test_llama_cpp_output_follows_the_json_schema(llama_backend):
    schema = {"type": "object", "properties": {"result": {"type": "string", "maxLength": 80},
                                               "reward": {"type": "integer", "enum": [-1, 0, 1]}},
              "required": ["result", "reward"]}
    requests = [GenRequest(messages=({"role": "user", "content": f"Simulate a weather API for city {c}."},),
                           json_schema=schema, sampling=Sampling(120, 0.9, 0.95, seed=i))
                for i, c in enumerate(["Paris", "Oslo", "Lima"])]
    for completion in llama_backend.generate_batch(requests):
        validate(json.loads(completion.text), schema)
        assert completion.num_tokens > 0


def test_llama_cpp_takes_the_long_string_bounds_of_the_roles(llama_backend):
    """The tool simulator's 1500-character result once crashed llama.cpp's grammar parser."""
    schema = {"type": "object", "properties": {"reasoning": {"type": "string", "minLength": 1, "maxLength": 1000},
                                               "result": {"type": "string", "minLength": 1, "maxLength": 1500},
                                               "reward": {"type": "integer", "enum": [-1, 0, 1]}},
              "required": ["reasoning", "result", "reward"]}
    req = GenRequest(messages=({"role": "user", "content": "Simulate a weather API for Paris."},),
                     json_schema=schema, sampling=Sampling(24, 0.7, 0.95, seed=0))
    completion = llama_backend.generate_batch([req])[0]
    assert re.match(r'\{\s*"reasoning"', completion.text), completion.text
    assert completion.num_tokens == 24


def test_llama_cpp_keeps_the_schema_field_order(llama_backend):
    schema = {"type": "object", "properties": {"reasoning": {"type": "string", "maxLength": 40},
                                               "reward": {"type": "integer", "enum": [-1, 0, 1]}},
              "required": ["reward", "reasoning"]}
    req = GenRequest(messages=({"role": "user", "content": "Judge: 2+2=4."},), json_schema=schema,
                     sampling=Sampling(60, 0.5, 1.0, seed=3))
    text = llama_backend.generate_batch([req])[0].text
    assert text.index('"reasoning"') < text.index('"reward"')


def test_llama_cpp_same_seed_same_answer(llama_backend):
    req = GenRequest(messages=({"role": "user", "content": "Name a colour."},), sampling=Sampling(20, 1.0, 1.0, seed=42))
    assert llama_backend.generate_batch([req])[0].text == llama_backend.generate_batch([req])[0].text


def test_each_backend_declares_what_it_implements_on_the_interface():
    """Every capability is a member of lm/base.Backend; this is what each backend overrides (a
    new capability, or a backend that gains one, shows here)."""
    from scripted import ScriptedBackend

    from trustee_lite.config import BACKENDS
    from trustee_lite.lm import IMPLEMENTATIONS, backend_class
    from trustee_lite.lm.base import Backend

    identity = {"name", "model_id", "max_batch"}  # every backend sets these
    capabilities = {n for n in [*vars(Backend), *Backend.__annotations__] if not n.startswith("_")} - identity

    def implemented(cls) -> set[str]:
        return {n for n in capabilities if any(n in vars(k) for k in cls.__mro__[: cls.__mro__.index(Backend)])}

    assert set(IMPLEMENTATIONS) == set(BACKENDS)
    classes = {name: backend_class(name) for name in BACKENDS}
    assert {name: implemented(cls) for name, cls in classes.items()} == {
        "transformers": {"check_runnable", "batch_key", "generate_batch", "close", "attach_lora", "set_mode",
                         "weights_changed", "selective_logits", "gpu_monitor", "compiled_decode", "mixed_adapters"},
        "llama_cpp": {"generate_batch", "close"},
        "openai": {"remote", "check_runnable", "agenerate", "aclose"},
    }
    assert implemented(ScriptedBackend) == {"batch_key", "generate_batch"}
    assert all(issubclass(cls, Backend) for cls in classes.values())
    assert [cls.remote for cls in classes.values()] == [name == "openai" for name in classes]
