"""Key/value reuse across policy turns (lm/prefix_cache.py): a later turn feeds the model only
what its earlier turns did not, on the embedded model and on tiny Qwen3 and Llama models; the
log-probs recorded at sampling still equal a fresh teacher-forced forward over the whole
sequence, and the tokens equal those sampled without reuse."""

from __future__ import annotations

import pytest
import torch

from trustee_lite.config import PolicyConfig
from trustee_lite.env.chat import PolicyChat
from trustee_lite.lm import GenRequest, Sampling
from trustee_lite.lm.hf import TransformersBackend
from trustee_lite.lm.prefix_cache import PrefixCache, common_prefix

TEMPERATURE = 0.8
QUERIES = ["What is the weather in Paris today?", "Hi", "Book a table for two at eight tonight, please."]
SYSTEM = "You are a helpful assistant with tools. Answer briefly; call a tool when one fits."


def kv(tokens: int) -> torch.Tensor:
    return torch.zeros((2, 2, 1, tokens, 4))  # layers, keys/values, heads, tokens, dim: 64 bytes a token


def test_common_prefix():
    assert common_prefix((1, 2, 3, 4), (1, 2, 3, 4)) == 4
    assert common_prefix((1, 2, 3, 4), (1, 2, 9)) == 2
    assert common_prefix((5,), (1, 2)) == 0
    assert common_prefix((), (1,)) == 0


def test_lookup_takes_the_longest_shared_prefix_and_leaves_one_token_to_feed():
    cache = PrefixCache(10_000)
    cache.store((1, 2, 3), kv(3))
    cache.store((1, 2, 7, 8, 9), kv(5))
    assert cache.lookup((1, 2, 7, 8, 9, 10)).tokens == 5  # a whole entry, then one new token
    assert cache.lookup((1, 2, 3, 4)).tokens == 3
    assert cache.lookup((1, 2, 7, 8, 9)).tokens == 4  # the same sequence: its last token is fed again
    assert cache.lookup((1, 2, 5)).tokens == 2  # a common start (the system prompt) is reused too
    assert cache.lookup((9, 2, 3)).kv is None
    assert cache.lookup((1, 2, 5), min_tokens=3).kv is None


def test_a_longer_turn_replaces_its_prefix_and_the_budget_drops_the_least_recently_used():
    cache = PrefixCache(64 * 10)  # ten tokens
    cache.store((1, 2, 3), kv(3))
    cache.store((1, 2, 3, 4, 5), kv(5))  # the same episode's next turn: its earlier entry goes
    assert list(cache.entries) == [(1, 2, 3, 4, 5)] and cache.bytes == 64 * 5
    cache.store((7, 8), kv(2))
    cache.lookup((1, 2, 3, 4, 5, 6))  # used: now the most recent
    cache.store((9, 9, 9, 9), kv(4))  # 11 tokens > 10: the least recently used, (7, 8), goes
    assert list(cache.entries) == [(1, 2, 3, 4, 5), (9, 9, 9, 9)] and cache.bytes == 64 * 9
    cache.store(tuple(range(11)), kv(11))  # larger than the whole budget: not kept
    assert len(cache) == 2
    cache.clear()
    assert len(cache) == 0 and cache.bytes == 0


def batch(backend, prompts, seed):
    requests = [GenRequest(prompt_ids=tuple(p), sampling=Sampling(12, TEMPERATURE, 1.0, seed=seed + i), logprobs=True)
                for i, p in enumerate(prompts)]
    return requests, backend.generate_batch(requests)


def worst_gap(backend, requests, completions) -> float:
    """Largest difference between a recorded log-prob and the same token's log-prob in one
    teacher-forced forward over prompt + completion."""
    worst = 0.0
    for request, completion in zip(requests, completions):
        ids = torch.tensor([list(request.prompt_ids) + list(completion.token_ids)], device=backend.device)
        with torch.no_grad():
            logits = backend.model(input_ids=ids).logits.float() / TEMPERATURE
        logp = torch.log_softmax(logits[0, :-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)
        fresh = logp[len(request.prompt_ids) - 1:].cpu()
        assert len(fresh) == len(completion.logprobs) == completion.num_tokens > 0
        worst = max(worst, float((fresh - torch.tensor(completion.logprobs)).abs().max()))
    return worst


@pytest.fixture(scope="module")
def tiny(family_dirs):
    return {name: TransformersBackend(PolicyConfig(model=str(family_dirs[name]), batch_size=8), "policy")
            for name in ("qwen3", "llama3")}


@pytest.mark.parametrize("family", ["embedded", "qwen3", "llama3"])
def test_later_turns_feed_only_the_new_tokens_with_the_logprobs_of_a_fresh_forward(family, smol_backend, tiny):
    backend = smol_backend if family == "embedded" else tiny[family]
    assert backend.prefix_cache is not None
    backend.weights_changed()  # nothing left by other tests
    chat = PolicyChat(backend.tokenizer)
    prompts = [chat.first_prompt(SYSTEM, q, []) for q in QUERIES]
    requests, completions = batch(backend, prompts, 0)
    assert backend.times.reused_tokens == 0 and backend.times.fed_tokens == sum(map(len, prompts))
    assert worst_gap(backend, requests, completions) < 1e-4
    for turn in (1, 2):  # each episode goes on: a tool result, then a user message
        message = chat.tool_messages([("get_weather", '{"temp": 21}')]) if turn == 1 else [chat.user_message("Thanks!")]
        prompts = [list(r.prompt_ids) + list(c.token_ids) + chat.continuation(message, c.token_ids[-1])
                   for r, c in zip(requests, completions)]
        kept = [len(r.prompt_ids) + c.num_tokens - 1 for r, c in zip(requests, completions)]  # all but the last token
        new = max(len(p) - k for p, k in zip(prompts, kept))  # every row feeds as many slots as the longest needs
        requests, completions = batch(backend, prompts, 10 * turn)
        assert backend.times.fed_tokens == sum(min(len(p), new) for p in prompts)
        assert backend.times.reused_tokens == sum(len(p) - min(len(p), new) for p in prompts)
        assert worst_gap(backend, requests, completions) < 1e-4

    # a new episode takes what it shares with the kept ones: the system prompt
    fresh = chat.first_prompt(SYSTEM, "Is it sunny in Rome?", [])
    requests_fresh, completions_fresh = batch(backend, [fresh], 99)
    assert 0 < backend.times.reused_tokens < len(fresh)
    assert worst_gap(backend, requests_fresh, completions_fresh) < 1e-4

    kept, backend.prefix_cache = backend.prefix_cache, None  # the last turn again, every token fed
    try:
        again = backend.generate_batch(requests)
    finally:
        backend.prefix_cache = kept
    assert backend.times.reused_tokens == 0
    assert [c.token_ids for c in again] == [c.token_ids for c in completions]
    assert max(abs(x - y) for a, b in zip(again, completions) for x, y in zip(a.logprobs, b.logprobs)) < 1e-4


def test_an_update_forgets_the_cached_turns(tiny):
    backend = tiny["llama3"]
    prompt = PolicyChat(backend.tokenizer).first_prompt(SYSTEM, QUERIES[0], [])
    batch(backend, [prompt], 0)
    assert len(backend.prefix_cache) > 0
    backend.set_mode(True)  # what the learner does before an update
    backend.set_mode(False)
    assert len(backend.prefix_cache) == 0


def test_no_reuse_where_the_cache_cannot_be_laid_out(family_dirs):
    gemma = TransformersBackend(PolicyConfig(model=str(family_dirs["gemma2"])), "policy")  # sliding-window layers
    off = TransformersBackend(PolicyConfig(model=str(family_dirs["qwen3"]), kv_reuse_mb=0), "policy")
    assert gemma.prefix_cache is None and off.prefix_cache is None
    prompt = PolicyChat(off.tokenizer).first_prompt(SYSTEM, QUERIES[0], [])
    (completion,) = off.generate_batch([GenRequest(prompt_ids=tuple(prompt), sampling=Sampling(4, 1.0, 1.0))])
    assert off.times.fed_tokens == len(prompt) and off.times.prefill_s > 0 and completion.num_tokens > 0
