"""Compiled decoding (static caches in batch buckets, torch.compile) gives the eager path's tokens
and log-probs, on the embedded model on the CPU, kept keys and values of earlier turns included;
one bucket is compiled once."""

from __future__ import annotations

import pytest

from trustee_lite.config import PolicyConfig
from trustee_lite.lm import GenRequest, Sampling
from trustee_lite.lm.hf import TransformersBackend
from trustee_lite.lm.static_cache import StaticCaches, bucket_for, bucket_sizes

SAMPLINGS = [Sampling(20, 0.0), Sampling(20, 1.0, 0.9, seed=3), Sampling(20, 0.8, 1.0, seed=5, frequency_penalty=0.1)]
TEXTS = ["What is the weather in Paris today?", "Hi", "Book a table for two at eight tonight, please."]


def test_buckets_are_powers_of_two_up_to_the_batch_size():
    assert bucket_sizes(1) == (1,) and bucket_sizes(8) == (1, 2, 4, 8) and bucket_sizes(12) == (1, 2, 4, 8, 12)
    assert bucket_sizes(6144, 1024) == (1024, 2048, 4096, 6144) and bucket_sizes(256, 1024) == (256,)
    assert [bucket_for(n, bucket_sizes(12)) for n in (1, 3, 5, 9, 12)] == [1, 4, 8, 12, 12]
    with pytest.raises(ValueError):
        bucket_for(13, bucket_sizes(12))


def test_smaller_buckets_are_views_of_the_largest(smol_backend):
    import torch

    caches = StaticCaches(smol_backend.model.config, 2048, 4)
    assert caches.sizes == (1, 2, 4) and caches.lengths == (1024, 2048)
    shape = (1, smol_backend.model.config.num_key_value_heads, 3, smol_backend.model.config.head_dim)
    with torch.inference_mode():
        bucket, small = caches.take(2, 600)
        assert bucket == (2, 1024)
        small.update(torch.ones((2,) + shape[1:]), torch.ones((2,) + shape[1:]), 0)
        assert small.layers[0].keys.shape == (2, shape[1], 1024, shape[3])
        _, large = caches.take(4, 1500)  # emptied: the small one's rows with it
        assert large.layers[0].keys.shape == (4, shape[1], 2048, shape[3])
        assert float(large.layers[0].keys.abs().sum()) == 0
        assert small.layers[0].keys.data_ptr() == large.layers[0].keys.data_ptr()


def turn(backend, prompts):
    return backend.generate_batch([GenRequest(prompt_ids=tuple(p), sampling=s, logprobs=True)
                                   for p, s in zip(prompts, SAMPLINGS)])


def test_compiled_decoding_gives_the_eager_tokens_and_logprobs(smol_backend):
    compiled = TransformersBackend(PolicyConfig(batch_size=4, decode="compiled", static_cache_tokens=256), "policy")
    assert compiled.compiled_decode and not smol_backend.compiled_decode
    try:
        prompts = [smol_backend.encode_messages([{"role": "user", "content": t}]) for t in TEXTS]
        for number in (1, 2):  # the second turn takes the first's keys and values from the prefix cache
            eager, fast = turn(smol_backend, prompts), turn(compiled, prompts)
            assert [c.token_ids for c in fast] == [c.token_ids for c in eager]
            worst = max(abs(a - b) for e, f in zip(eager, fast) for a, b in zip(e.logprobs, f.logprobs))
            assert worst < 1e-4, worst
            if number == 1:
                assert compiled.times.compile_s > 0  # three rows: bucket 4, compiled at this call
            else:
                assert compiled.times.compile_s == 0 and compiled.times.reused_tokens > 0
            follow = smol_backend.encode_messages([{"role": "user", "content": "And tomorrow?"}])
            prompts = [p + list(c.token_ids) + follow for p, c in zip(prompts, eager)]
        assert compiled._compiled == {(4, 256, True)} and compiled.compiled_decode  # no fall back to eager
        assert hasattr(compiled.model, "_compiled_call")  # transformers compiled the decode step
    finally:
        compiled.close()
