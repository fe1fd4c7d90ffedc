"""The generation service batches concurrent requests, never mixes adapter on/off, and reports
failures to the caller that made the request."""

from __future__ import annotations

import asyncio

import pytest
from scripted import ScriptedBackend

from trustee_lite.lm import GenerationError, GenerationService, GenRequest, Sampling
from trustee_lite.lm.base import BatchTimes


def req(text: str, adapter: bool = True) -> GenRequest:
    return GenRequest(messages=({"role": "user", "content": text},), sampling=Sampling(8), adapter=adapter)


def echo(request: GenRequest):
    content = request.messages[0]["content"]
    return RuntimeError("boom") if content == "fail" else content.upper()


def run(coro):
    return asyncio.run(coro)


def test_concurrent_requests_share_one_batch():
    backend = ScriptedBackend(echo)

    async def main():
        async with GenerationService(backend, max_batch=16, max_wait_s=0.05) as service:
            return await asyncio.gather(*(service.generate(req(f"q{i}")) for i in range(10)))

    results = run(main())
    assert [r.text for r in results] == [f"Q{i}" for i in range(10)]
    assert [len(b) for b in backend.batches] == [10]


def test_batches_are_bounded_by_max_batch():
    backend = ScriptedBackend(echo)

    async def main():
        async with GenerationService(backend, max_batch=4, max_wait_s=0.05) as service:
            await asyncio.gather(*(service.generate(req(f"q{i}")) for i in range(10)))

    run(main())
    assert [len(b) for b in backend.batches] == [4, 4, 2]


def test_adapter_on_and_off_are_never_in_one_batch():
    backend = ScriptedBackend(echo)

    async def main():
        async with GenerationService(backend, max_batch=16, max_wait_s=0.05) as service:
            await asyncio.gather(*(service.generate(req(f"q{i}", adapter=i % 2 == 0)) for i in range(6)))

    run(main())
    assert sorted(len(b) for b in backend.batches) == [3, 3]
    for batch in backend.batches:
        assert len({r.adapter for r in batch}) == 1


def test_a_failed_request_raises_for_its_caller_only():
    backend = ScriptedBackend(echo)

    async def main():
        async with GenerationService(backend, max_batch=16, max_wait_s=0.05) as service:
            return await asyncio.gather(service.generate(req("ok")), service.generate(req("fail")), return_exceptions=True)

    ok, failed = run(main())
    assert ok.text == "OK"
    assert isinstance(failed, GenerationError) and "boom" in str(failed)


def test_generate_outside_the_context_is_refused():
    service = GenerationService(ScriptedBackend(echo))
    with pytest.raises(RuntimeError, match="not running"):
        run(service.generate(req("x")))


def test_stats_count_requests_batches_and_tokens():
    backend = ScriptedBackend(lambda r: "abcdefgh")  # scripted: len // 4 = 2 tokens

    async def main():
        async with GenerationService(backend, max_batch=8, max_wait_s=0.05) as service:
            await asyncio.gather(*(service.generate(req(str(i))) for i in range(4)))
            return service.stats

    stats = run(main())
    assert (stats.requests, stats.batches, stats.tokens, stats.mean_batch) == (4, 1, 8, 4.0)


class TimedBackend(ScriptedBackend):
    """Says where each batch's time went, as the transformers backend does."""

    def generate_batch(self, requests):
        n = len(requests)
        self.times = BatchTimes(prefill_s=0.5 * n, decode_s=1.0 * n, fed_tokens=10 * n, reused_tokens=100 * n)
        return super().generate_batch(requests)


def test_the_policys_prefill_and_decode_are_summed_the_simulators_are_not():
    backend = TimedBackend(echo)

    async def main():
        async with GenerationService(backend, max_batch=16, max_wait_s=0.05) as service:
            await asyncio.gather(*(service.generate(req(f"q{i}", adapter=i < 3)) for i in range(5)))
            await service.generate(req("again"))
            return service.stats

    stats = run(main())
    assert sorted(len(b) for b in backend.batches) == [1, 2, 3]  # policy 3 + 1, simulator 2
    assert (stats.prefill_s, stats.decode_s, stats.fed_tokens, stats.reused_tokens) == (2.0, 4.0, 40, 400)
