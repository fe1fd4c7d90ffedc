"""Sampling equals training on real model families: no logits processor from a model's own
generation config, log-probs recorded at sampling equal the learner's, requests that do not fit
the context window fail alone, and JSON schemas hold after a think block."""

from __future__ import annotations

import json

import pytest
import torch
from model_families import WINDOW, build_family

from trustee_lite.config import LoraConfig, PolicyConfig, TrainConfig
from trustee_lite.lm import ContextLimit, GenerationError, GenRequest, Sampling
from trustee_lite.lm.hf import TransformersBackend
from trustee_lite.lm.sampler import RowSampler
from trustee_lite.train.learner import Learner


@pytest.fixture(scope="module")
def penalised(tmp_path_factory, smol_tokenizer):
    """Tiny Qwen3 whose generation config samples with top_k/top_p/temperature, as Qwen3's does,
    and adds a repetition penalty of 1.3."""
    folder = build_family("qwen3", smol_tokenizer, tmp_path_factory.mktemp("penalised"), repetition_penalty=1.3)
    return TransformersBackend(PolicyConfig(model=str(folder), batch_size=8), "policy")


def prompts(backend, n=3):
    texts = ["What is the weather in Paris today?", "Hi", "Book a table for two at eight tonight, please."]
    return [backend.encode_messages([{"role": "user", "content": t}]) for t in texts[:n]]


def test_logprobs_at_sampling_equal_the_learners_under_a_penalising_generation_config(penalised):
    temperature = 0.8
    requests = [GenRequest(prompt_ids=tuple(p), sampling=Sampling(24, temperature, 1.0, seed=i), logprobs=True)
                for i, p in enumerate(prompts(penalised))]
    completions = penalised.generate_batch(requests)  # one batch, left-padded to the longest prompt
    learner = Learner(penalised, LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "v_proj"]), TrainConfig(),
                      temperature, seed=0)
    worst = 0.0
    for request, completion in zip(requests, completions):
        ids = torch.tensor([list(request.prompt_ids) + list(completion.token_ids)])
        with torch.no_grad():
            recomputed = learner._logprobs(ids, torch.ones_like(ids))[0, len(request.prompt_ids) - 1:]
        assert len(recomputed) == len(completion.logprobs) == completion.num_tokens > 0
        worst = max(worst, float((recomputed - torch.tensor(completion.logprobs)).abs().max()))
    assert worst < 1e-4, worst  # (a leaked penalty moved them by 0.02 here: it hits every prompt token)


def test_the_models_generation_config_is_not_applied(penalised):
    config = penalised.model.generation_config
    assert config.repetition_penalty in (None, 1.0) and not config.do_sample and config.top_k in (None, 0, 50)


def test_a_request_too_long_for_the_context_window_fails_alone(penalised):
    ok = [GenRequest(prompt_ids=tuple(p), sampling=Sampling(16, 1.0, 1.0, seed=i)) for i, p in enumerate(prompts(penalised, 2))]
    too_long = GenRequest(prompt_ids=tuple([100] * (WINDOW - 10)), sampling=Sampling(16, 1.0, 1.0, seed=7))
    first, failed, second = penalised.generate_batch([ok[0], too_long, ok[1]])
    assert isinstance(failed, ContextLimit) and failed.reason == "context_limit"
    assert f"exceeds the context window of {WINDOW}" in str(failed)
    alone = [penalised.generate_batch([r])[0] for r in ok]
    assert [first.token_ids, second.token_ids] == [a.token_ids for a in alone]


def test_a_policy_turn_that_does_not_fit_ends_the_episode_with_context_limit(penalised, tmp_path):
    from test_rollout import episode

    traj, asked = episode(penalised.tokenizer, tmp_path, [], {}, policy_backend=penalised, max_new_tokens=WINDOW,
                          max_response_tokens=WINDOW)
    assert traj.aborted and traj.abort_reason == "context_limit" and traj.end_reason == "aborted"
    assert "exceeds the context window" in traj.verifier_reasoning and asked == []
    assert traj.prompt_tokens > 0 and traj.policy_tokens == 0


def test_a_batch_that_fails_is_retried_row_by_row(penalised, monkeypatch):
    ok = [GenRequest(prompt_ids=tuple(p), sampling=Sampling(12, 1.0, 1.0, seed=i)) for i, p in enumerate(prompts(penalised, 2))]
    poison = GenRequest(prompt_ids=(13, 13, 13), sampling=Sampling(12, 1.0, 1.0, seed=9))
    generate = penalised.model.generate

    def failing(*args, input_ids, **kwargs):
        if (input_ids[:, -3:] == 13).all(dim=1).any():
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return generate(*args, input_ids=input_ids, **kwargs)

    expected = [penalised.generate_batch([r])[0].token_ids for r in ok]
    monkeypatch.setattr(penalised.model, "generate", failing)
    first, failed, second = penalised.generate_batch([ok[0], poison, ok[1]])
    assert isinstance(failed, GenerationError) and "illegal memory access" in str(failed)
    assert [first.token_ids, second.token_ids] == expected


SCHEMA = {"type": "object", "properties": {"response": {"type": "string", "maxLength": 40},
                                           "reward": {"type": "integer", "enum": [-1, 0, 1]}},
          "required": ["response", "reward"]}


def test_json_schema_applies_after_the_think_block(smol_backend):
    """A row whose model writes a think block first: free until </think>, then every token keeps
    the answer valid JSON for the schema. Scores come from a script, not a model: they push the
    think text, then are random."""
    from trustee_lite.lm.constrain import SchemaCompiler

    tok = smol_backend.tokenizer
    vocab = smol_backend.model.get_output_embeddings().weight.shape[0]
    compiler = SchemaCompiler(tok, vocab, smol_backend.eos_ids)
    think = tok("<think>\nThe user wants rain news.\n</think>\n\n", add_special_tokens=False)["input_ids"]
    sampling = [Sampling(200, 1.0, 1.0, seed=3)]
    sampler = RowSampler(sampling, smol_backend.eos_ids, 0, [compiler.constraint(SCHEMA, True, 200)], compiler)
    generator = torch.Generator().manual_seed(0)
    out = []
    for step in range(200):
        scores = torch.randn((1, vocab), generator=generator)
        if step < len(think):
            scores[0, think[step]] = 100.0
        token = int(sampler(torch.zeros((1, step), dtype=torch.long), scores).argmax())
        out.append(token)
        if token in smol_backend.eos_ids:
            break
    text = tok.decode(out[:-1])
    assert out[-1] in smol_backend.eos_ids and text.startswith("<think>\nThe user wants rain news.\n</think>")
    answer = json.loads(text.split("</think>")[1])
    assert set(answer) == {"response", "reward"} and answer["reward"] in (-1, 0, 1) and len(answer["response"]) <= 40


def test_without_thinking_the_schema_applies_from_the_first_token(smol_backend):
    request = GenRequest(messages=({"role": "user", "content": "Reply to: is it raining?"},), json_schema=SCHEMA,
                         sampling=Sampling(60, 1.0, 1.0, seed=1))
    completion = smol_backend.generate_batch([request])[0]
    assert completion.finish_reason == "stop"
    answer = json.loads(completion.text)
    assert answer["reward"] in (-1, 0, 1) and len(answer["response"]) <= 40


def test_string_bounds_fit_the_token_budget():
    from trustee_lite.lm.constrain import CLOSING_TOKENS, fit_to_budget

    schema = {"type": "object", "properties": {"a": {"type": "string", "minLength": 10, "maxLength": 800},
                                               "b": {"type": "string", "maxLength": 200},
                                               "r": {"type": "integer", "enum": [-1, 0, 1]}},
              "required": ["a", "b", "r"]}
    assert fit_to_budget(schema, 2000) is schema  # 1,000 characters fit 2,000 tokens
    fixed = (1 + 6) + (1 + 6) + (1 + 6 + 2)  # each key with its quotes and separators; "-1" at most
    room = 300 - CLOSING_TOKENS - fixed  # 274 characters for the two strings, in proportion 4:1
    fitted = fit_to_budget(schema, 300)["properties"]
    assert (fitted["a"]["maxLength"], fitted["b"]["maxLength"]) == (int(800 * room / 1000), int(200 * room / 1000))
    assert fitted["r"] == schema["properties"]["r"] and fitted["a"]["minLength"] == 10
    assert fit_to_budget(schema, 30)["properties"]["a"]["maxLength"] == 10  # never below minLength


def test_a_constrained_answer_closes_within_a_small_budget(smol_backend):
    """Digits tokenize one by one: unfitted, a 1,500-character string could not close in 48 tokens."""
    schema = {"type": "object", "properties": {"result": {"type": "string", "minLength": 1, "maxLength": 1500},
                                               "reward": {"type": "integer", "enum": [-1, 0, 1]}},
              "required": ["result", "reward"]}
    requests = [GenRequest(messages=({"role": "user", "content": "Write the number 12345678901234567890 many times."},),
                           json_schema=schema, sampling=Sampling(48, 1.0, 1.0, seed=s)) for s in range(4)]
    for completion in smol_backend.generate_batch(requests):
        assert completion.finish_reason == "stop", completion.text
        assert json.loads(completion.text)["reward"] in (-1, 0, 1)


def test_sampling_on_the_device_equals_the_reference_that_sampled_on_the_cpu(smol_backend, monkeypatch):
    """One batch mixing a greedy row, a top-p 0.9 row, a row with a frequency penalty and a
    schema-constrained row: the same tokens and log-probs through lm/sampler.py (logits kept on
    the model's device) and the sampler it replaced (tests/reference_sampler.py)."""
    from reference_sampler import ReferenceRowSampler

    import trustee_lite.lm.hf as hf

    messages = ({"role": "user", "content": "Name three fruits and say why you like each of them."},)
    schema = {"type": "object", "properties": {"fruit": {"type": "string", "maxLength": 40}}, "required": ["fruit"]}
    requests = [
        GenRequest(messages=messages, sampling=Sampling(32, 0.0, 1.0, seed=1), logprobs=True),
        GenRequest(messages=messages, sampling=Sampling(32, 1.0, 0.9, seed=2), logprobs=True),
        GenRequest(messages=messages, sampling=Sampling(32, 1.0, 1.0, seed=3, frequency_penalty=0.1), logprobs=True),
        GenRequest(messages=messages, sampling=Sampling(32, 0.7, 1.0, seed=4), json_schema=schema, logprobs=True),
    ]
    ours = smol_backend.generate_batch(requests)
    monkeypatch.setattr(hf, "RowSampler", ReferenceRowSampler)
    reference = smol_backend.generate_batch(requests)
    assert [c.token_ids for c in ours] == [c.token_ids for c in reference]
    assert len({c.token_ids for c in ours}) == 4  # four different ways of sampling, four different answers
    worst = max(abs(x - y) for a, b in zip(ours, reference) for x, y in zip(a.logprobs, b.logprobs))
    assert worst < 1e-5, worst
    assert ours[3].text.startswith('{"fruit": "')  # the schema held
