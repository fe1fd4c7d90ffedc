"""The LoRA learner on the embedded model: an update moves log-probs the way the advantages say,
micro-batching does not change the update, checkpoints load with plain PEFT and restore state."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from trustee_lite.config import LoraConfig, TrainConfig
from trustee_lite.lm.base import Backend
from trustee_lite.lm.lora import attach_lora
from trustee_lite.train.grpo import Sample
from trustee_lite.train.learner import Learner

GOOD = 'User: weather in Paris?\nAssistant: <tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
BAD = "User: weather in Paris?\nAssistant: I cannot help with that, sorry. Please ask someone else."


class Holder(Backend):
    """The part of a generation backend the learner uses: the model it puts the adapter on."""

    def __init__(self, model):
        self.model = model

    def attach_lora(self, lora, gradient_checkpointing):
        self.model = attach_lora(self.model, lora, gradient_checkpointing)
        return self.model


@pytest.fixture()
def base(smol_backend):
    return copy.deepcopy(smol_backend.model)


def make_learner(model, **train):
    cfg = TrainConfig(**{"learning_rate": 2e-3, "kl_coef": 0.0, "micro_batch_size": 4, **train})
    return Learner(Holder(model), LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "v_proj"]), cfg, 1.0, seed=0)


def samples(tokenizer, learner, advantages):
    """Two sequences whose second half is the 'policy' part; old log-probs from the current model."""
    out = []
    for text, adv in zip((GOOD, BAD), advantages):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        split = len(tokenizer("User: weather in Paris?\nAssistant:", add_special_tokens=False)["input_ids"])
        mask = [0] * split + [1] * (len(ids) - split)
        with torch.no_grad():
            logp = learner._logprobs(torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long))[0]
        out.append(Sample(tuple(ids), tuple(mask), (0.0, *logp.tolist()), adv))
    return out


def policy_logprob(learner, sample) -> float:
    ids = torch.tensor([sample.token_ids])
    with torch.no_grad():
        logp = learner._logprobs(ids, torch.ones_like(ids))[0]
    mask = torch.tensor(sample.policy_mask[1:], dtype=torch.float)
    return float((logp * mask).sum())


def adapter_weights(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def test_update_follows_the_advantages(base, smol_tokenizer):
    learner = make_learner(base)
    good, bad = samples(smol_tokenizer, learner, (1.0, -1.0))
    before = policy_logprob(learner, good), policy_logprob(learner, bad)
    for step in range(1, 4):  # each step samples anew: old log-probs are the current policy's
        stats = learner.update(samples(smol_tokenizer, learner, (1.0, -1.0)), step)
    after = policy_logprob(learner, good), policy_logprob(learner, bad)
    assert after[0] > before[0] + 0.5
    assert after[1] < before[1] - 0.5
    assert stats.optimizer_steps == 1 and stats.samples == 2 and stats.grad_norm > 0


def test_micro_batches_accumulate_to_the_same_update(smol_backend, smol_tokenizer):
    results = []
    for micro in (1, 2):
        torch.manual_seed(0)  # the same LoRA initialisation for both
        learner = make_learner(copy.deepcopy(smol_backend.model), micro_batch_size=micro, kl_coef=0.01)
        # Plain SGD, so the weight change is the gradient itself (Adam's first step is its sign,
        # which flips on float noise where the gradient is near zero).
        learner.optimizer = torch.optim.SGD(learner.params, lr=1.0)
        learner.scheduler = torch.optim.lr_scheduler.LambdaLR(learner.optimizer, lambda s: 1.0)
        stats = learner.update(samples(smol_tokenizer, learner, (1.0, -1.0)), 1)
        results.append((adapter_weights(learner.model), stats.loss))
    (w1, loss1), (w2, loss2) = results
    assert loss1 == pytest.approx(loss2, rel=1e-4)
    for name in w1:
        assert torch.allclose(w1[name], w2[name], atol=1e-6), name


def test_checkpoint_loads_with_plain_peft_and_restores_the_learner(smol_backend, smol_tokenizer, tmp_path):
    from peft import PeftModel

    learner = make_learner(copy.deepcopy(smol_backend.model))
    batch = samples(smol_tokenizer, learner, (1.0, -1.0))
    learner.update(batch, 1)
    folder = tmp_path / "step-000001"
    learner.save(folder, {"step": 1, "level": 4})
    assert {"adapter_config.json", "adapter_model.safetensors", "trainer.pt", "state.json"} <= {
        p.name for p in folder.iterdir()}
    assert not folder.with_name("step-000001.tmp").exists()

    ids = torch.tensor([smol_tokenizer(GOOD, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        base_logits = smol_backend.model(input_ids=ids).logits
        loaded = PeftModel.from_pretrained(copy.deepcopy(smol_backend.model), str(folder))
        tuned_logits = loaded(input_ids=ids).logits
    assert (tuned_logits - base_logits).abs().max() > 1e-3  # the adapter changes the outputs

    restored = make_learner(copy.deepcopy(smol_backend.model))
    assert restored.load(folder) == {"step": 1, "level": 4}
    for name, value in adapter_weights(learner.model).items():
        assert torch.equal(adapter_weights(restored.model)[name], value), name
    # Same optimizer state: the next update is identical in both.
    learner.update(batch, 2)
    restored.update(batch, 2)
    for name, value in adapter_weights(learner.model).items():
        assert torch.allclose(adapter_weights(restored.model)[name], value, atol=1e-7), name
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == 4
