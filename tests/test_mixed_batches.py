"""One batch mixing policy rows (adapter on) and simulator rows (adapter off), with
`mixed_batches`: each row gets what a batch of its own kind gives it, and the service splits the
batch's time between the roles by rows."""

from __future__ import annotations

import asyncio

import pytest
import torch

from trustee_lite.config import LoraConfig, PolicyConfig
from trustee_lite.lm import GenRequest, Sampling
from trustee_lite.lm.hf import TransformersBackend
from trustee_lite.lm.service import GenerationService

TEXTS = ["What is the weather in Paris today?", "Book a table for two at eight tonight, please."]


@pytest.fixture(scope="module")
def mixed():
    backend = TransformersBackend(PolicyConfig(batch_size=4, mixed_batches=True), "policy")
    assert not backend.mixed_adapters  # no adapter yet
    model = backend.attach_lora(LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "v_proj"]), False)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a LoRA that changes the answers (a new one adds nothing: B is zero)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    model.eval()
    yield backend
    backend.close()


def requests(backend, adapter: bool) -> list[GenRequest]:
    return [GenRequest(prompt_ids=tuple(backend.encode_messages([{"role": "user", "content": t}])), adapter=adapter,
                       sampling=Sampling(16, 0.0 if i == 0 else 0.9, 1.0, seed=7 + i), logprobs=True)
            for i, t in enumerate(TEXTS)]


def test_a_mixed_batch_gives_each_row_its_own_kinds_answer(mixed):
    on, off = requests(mixed, True), requests(mixed, False)
    assert mixed.mixed_adapters and mixed.batch_key(on[0]) == mixed.batch_key(off[0])
    alone = mixed.generate_batch(on) + mixed.generate_batch(off)
    together = mixed.generate_batch([on[0], off[0], on[1], off[1]])
    together = [together[0], together[2], together[1], together[3]]
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    worst = max(abs(a - b) for x, y in zip(alone, together) for a, b in zip(x.logprobs, y.logprobs))
    assert worst < 1e-4, worst
    assert alone[0].token_ids != alone[2].token_ids  # the adapter changes the answer: the rows did differ


def test_the_service_splits_a_mixed_batchs_time_by_rows(mixed):
    async def run():
        async with GenerationService(mixed, max_batch=4, max_wait_s=0.5) as service:
            await asyncio.gather(*(service.generate(r) for r in requests(mixed, True) + requests(mixed, False)[:1]))
            return service.stats

    stats = asyncio.run(run())
    assert stats.batches == 1 and stats.requests == 3
    assert stats.busy_adapter_on_s == pytest.approx(2 * stats.busy_adapter_off_s)
    assert stats.busy_adapter_on_s + stats.busy_adapter_off_s == pytest.approx(stats.busy_s)


def test_without_an_adapter_rows_asking_on_and_off_share_a_batch(smol_backend, caplog):
    """The base model before training (eval --base with a shared simulator): nothing to switch,
    and the batch runs as one (no row-by-row retry after a failed batch)."""
    assert not smol_backend.has_adapter and smol_backend.batch_key(requests(smol_backend, True)[0]) == (False,)
    both = smol_backend.generate_batch(requests(smol_backend, True)[:1] + requests(smol_backend, False)[:1])
    assert both[0].token_ids == both[1].token_ids  # the same prompt and seed: the same answer
    assert "failed" not in caplog.text
