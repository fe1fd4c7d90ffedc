"""The simulator client: runs a role call through the cache and the generation service, parses
the answer defensively, retries unusable answers, and gives up with a recorded reason."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import orjson

from trustee_lite.config import SimulatorConfig
from trustee_lite.env.role import RoleCall, RoleOutputError, SimulationFailed
from trustee_lite.jsontext import strip_think
from trustee_lite.lm import GenerationError, GenerationService, GenRequest, Sampling
from trustee_lite.lm.constrain import fit_to_budget
from trustee_lite.records import Turn
from trustee_lite.seeds import derive_seed

log = logging.getLogger(__name__)
Out = TypeVar("Out")


class Cache(Protocol):
    def cache_get(self, key: str) -> str | None: ...

    def cache_put(self, key: str, role: str, text: str, tokens: int) -> None: ...


def cache_key(backend: str, model: str, role: str, messages: Any, schema: Any, sampling: Sampling,
              thinking: bool | None = None, constrained: bool = True) -> str:
    """Hash of everything that decides a simulator answer: backend, model, role, prompt (with
    its schema, whether decoding enforces it, the template's thinking switch), sampling
    settings and seed. (The last two enter only when not at their defaults, so older caches
    stay valid.)"""
    payload = {
        "backend": backend, "model": model, "role": role, "messages": messages, "schema": schema,
        "max_new_tokens": sampling.max_new_tokens, "temperature": sampling.temperature,
        "top_p": sampling.top_p, "seed": sampling.seed,
    }
    if thinking is not None:
        payload["thinking"] = thinking
    if sampling.frequency_penalty:
        payload["frequency_penalty"] = sampling.frequency_penalty
    if not constrained:
        payload["constrained"] = False
    return hashlib.sha256(orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)).hexdigest()


def decoding_schema(schema: dict, cfg: SimulatorConfig, max_new_tokens: int) -> dict:
    """The schema enforced while decoding: its text bounds fitted to the token budget, so an
    answer closes before it is cut (after thinking the budget left is unknown: as written)."""
    return schema if cfg.thinking else fit_to_budget(schema, max_new_tokens)


@dataclass
class SimulatorStats:
    calls: int = 0  # model answers used (cache hits + misses)
    cache_hits: int = 0
    cache_misses: int = 0
    tokens: int = 0  # tokens generated for cache misses
    retries: int = 0
    parse_failures: int = 0  # answers that were not JSON of the role's schema
    rejected: int = 0  # schema-valid answers that broke a role's own rule
    truncated: int = 0  # answers cut by max_new_tokens (generated in this run)
    failures: dict[str, int] = field(default_factory=dict)  # abort reason -> count

    def figures(self) -> dict:
        """The simulator's part of a run summary."""
        return {
            "cache_hits": self.cache_hits, "cache_misses": self.cache_misses,
            "cache_hit_rate": round(self.cache_hits / self.calls, 4) if self.calls else None,
            "simulator_retries": self.retries, "simulator_parse_failures": self.parse_failures,
            "simulator_rejected": self.rejected, "simulator_truncated": self.truncated, "simulator_tokens": self.tokens,
        }


class SimulatorClient:
    def __init__(self, service: GenerationService, cache: Cache, cfg: SimulatorConfig):
        self.service = service
        self.cache = cache
        self.cfg = cfg
        self.stats = SimulatorStats()

    def shown(self, turns) -> tuple[Turn, ...]:
        """The conversation as simulator roles see it: with `strip_thinking`, the policy's think
        blocks are removed (a user never sees the assistant's private reasoning); the trained
        tokens keep them either way."""
        if not self.cfg.strip_thinking:
            return tuple(turns)
        return tuple(replace(t, content=strip_think(t.content).strip()) if t.role == "assistant" else t for t in turns)

    async def run(self, call: RoleCall[Out], *seed_parts: object) -> Out:
        """The parsed answer; SimulationFailed after 1 + retries unusable answers."""
        last = ""
        for attempt in range(self.cfg.retries + 1):
            if attempt:
                self.stats.retries += 1
            sampling = Sampling(
                max_new_tokens=call.max_new_tokens or self.cfg.max_new_tokens, temperature=self.cfg.temperature,
                top_p=self.cfg.top_p, seed=derive_seed(*seed_parts, call.role, attempt),
                frequency_penalty=self.cfg.frequency_penalty,
            )
            text = await self._answer(call, sampling)
            try:
                return call.parse(text)
            except RoleOutputError as err:
                last = str(err)
                if err.kind == "parse":
                    self.stats.parse_failures += 1
                else:
                    self.stats.rejected += 1
                log.debug("%s attempt %d unusable: %s", call.role, attempt, last)
        self._fail(f"{call.role}_invalid")
        raise SimulationFailed(f"{call.role}_invalid", f"no usable answer in {self.cfg.retries + 1} attempts; last: {last}")

    async def _answer(self, call: RoleCall, sampling: Sampling) -> str:
        backend = self.service.backend
        constrained = self.cfg.json_constraint
        key = cache_key(backend.name, backend.model_id, call.role, call.messages, call.schema, sampling,
                        self.cfg.thinking, constrained)
        self.stats.calls += 1
        cached = self.cache.cache_get(key)
        if cached is not None:
            self.stats.cache_hits += 1
            return cached
        self.stats.cache_misses += 1
        schema = decoding_schema(call.schema, self.cfg, sampling.max_new_tokens)
        request = GenRequest(messages=call.messages, json_schema=schema if constrained else None,
                             sampling=sampling, adapter=False, thinking=self.cfg.thinking)
        try:
            completion = await self.service.generate(request)
        except GenerationError as err:
            self._fail(err.reason)
            raise SimulationFailed(err.reason, f"{call.role}: {err}") from None
        self.stats.tokens += completion.num_tokens
        if completion.finish_reason == "length":
            self.stats.truncated += 1
        self.cache.cache_put(key, call.role, completion.text, completion.num_tokens)
        return completion.text

    def _fail(self, reason: str) -> None:
        self.stats.failures[reason] = self.stats.failures.get(reason, 0) + 1
