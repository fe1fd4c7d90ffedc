"""The generation service: episodes submit requests; it gathers concurrent ones into batches
(bounded size and wait) and runs each batch in one worker thread, so the event loop keeps going."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from trustee_lite.lm.base import Backend, Completion, GenerationError, GenRequest

log = logging.getLogger(__name__)


@dataclass
class ServiceStats:
    requests: int = 0
    batches: int = 0
    tokens: int = 0  # generated tokens
    busy_s: float = 0.0  # time the backend spent generating
    busy_adapter_on_s: float = 0.0  # ... for requests with the adapter on (the policy)
    busy_adapter_off_s: float = 0.0  # ... for requests with the adapter off (simulator roles)
    # a local backend's batches with the adapter on (the policy), where it says (BatchTimes):
    prefill_s: float = 0.0  # prompt forwards, up to the first new token's logits
    decode_s: float = 0.0  # the tokens after
    fed_tokens: int = 0  # prompt tokens the model encoded
    reused_tokens: int = 0  # prompt tokens whose keys and values came from earlier turns
    compile_s: float = 0.0  # batches of either role that compiled a new decode graph (BatchTimes)

    @property
    def mean_batch(self) -> float:
        return self.requests / self.batches if self.batches else 0.0


class GenerationService:
    """Use as ``async with GenerationService(backend) as service: await service.generate(req)``."""

    def __init__(self, backend: Backend, max_batch: int | None = None, max_wait_s: float = 0.02):
        self.backend = backend
        self.max_batch = max(1, min(max_batch or backend.max_batch, backend.max_batch))
        self.max_wait_s = max_wait_s
        self.stats = ServiceStats()
        self._queue: asyncio.Queue | None = None
        self._loop_task: asyncio.Task | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight = 0  # remote backends: requests out now, and since when one was
        self._busy_since = 0.0

    @classmethod
    def of(cls, backend: Backend, cfg) -> GenerationService:
        """The service for a model section of the recipe (its batch size and batch wait)."""
        return cls(backend, cfg.batch_size, cfg.batch_wait_ms / 1000)

    async def __aenter__(self) -> GenerationService:
        self._queue = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"gen-{self.backend.name}")
        self._loop_task = asyncio.create_task(self._serve(), name=f"generation-service-{self.backend.name}")
        return self

    async def __aexit__(self, *exc) -> None:
        self._loop_task.cancel()
        try:
            await self._loop_task
        except asyncio.CancelledError:
            pass
        while not self._queue.empty():
            _, future = self._queue.get_nowait()
            if not future.done():
                future.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def generate(self, request: GenRequest) -> Completion:
        """Queue one request and wait for its completion; raises GenerationError if it failed."""
        if self._loop_task is None or self._loop_task.done():
            raise RuntimeError("the generation service is not running (use it as an async context manager)")
        if self.backend.remote:
            return await self._direct(request)
        future = asyncio.get_running_loop().create_future()
        await self._queue.put((request, future))
        return await future

    async def _direct(self, request: GenRequest) -> Completion:
        """A remote backend: send now; busy time is the time at least one request is out."""
        if self._in_flight == 0:
            self._busy_since = time.perf_counter()
        self._in_flight += 1
        try:
            result = await self.backend.agenerate(request)
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                spent = time.perf_counter() - self._busy_since
                self.stats.busy_s += spent
                self.stats.busy_adapter_off_s += spent
        self.stats.requests += 1
        self.stats.batches += 1
        self.stats.tokens += result.num_tokens
        return result

    async def run_exclusive(self, fn, *args):
        """Run fn(*args) in the worker thread, between batches: a training update on the same
        weights never overlaps a generation. Its time is not counted as generation time."""
        if self._loop_task is None or self._loop_task.done():
            raise RuntimeError("the generation service is not running (use it as an async context manager)")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait_s
            while len(batch) < self.max_batch:
                if not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            live = [(req, fut) for req, fut in batch if not fut.done()]
            for group in _group(live, self.backend.batch_key):
                await self._run(loop, group)

    async def _run(self, loop, group) -> None:
        requests = [req for req, _ in group]
        start = time.perf_counter()
        try:
            results, times = await loop.run_in_executor(self._executor, self._generate, requests)
        except asyncio.CancelledError:
            for _, future in group:
                future.cancel()
            raise
        except Exception as err:  # a whole batch failed: every caller hears why
            log.exception("batch of %d failed", len(requests))
            results, times = [GenerationError(f"{self.backend.name}: {err}")] * len(requests), None
        spent = time.perf_counter() - start
        self.stats.busy_s += spent
        if times is not None:
            self.stats.compile_s += times.compile_s
        # a batch mixing both (Backend.mixed_adapters): each side its share of the rows
        share = sum(1 for r in requests if r.adapter) / len(requests)
        self.stats.busy_adapter_on_s += spent * share
        self.stats.busy_adapter_off_s += spent * (1 - share)
        if share and times is not None:
            self.stats.prefill_s += times.prefill_s * share
            self.stats.decode_s += times.decode_s * share
            self.stats.fed_tokens += times.fed_tokens  # the backend counts the policy's rows alone
            self.stats.reused_tokens += times.reused_tokens
        self.stats.batches += 1
        self.stats.requests += len(requests)
        for (_, future), result in zip(group, results):
            if future.done():
                continue
            if isinstance(result, GenerationError):
                future.set_exception(result)
            else:
                self.stats.tokens += result.num_tokens
                future.set_result(result)

    def _generate(self, requests):
        """In the worker thread: the batch's results and where its time went (the backend's
        BatchTimes of this very call, None where it keeps none)."""
        results = self.backend.generate_batch(requests)
        return results, self.backend.times


def _group(items, key):
    groups: dict[tuple, list] = {}
    for item in items:
        groups.setdefault(key(item[0]), []).append(item)
    return list(groups.values())
