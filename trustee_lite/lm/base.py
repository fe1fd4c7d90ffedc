"""What every generation backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    frequency_penalty: float = 0.0  # subtracted from a token's logit per time the answer already has it


@dataclass(frozen=True)
class GenRequest:
    """One generation: chat messages rendered by the backend's template, or exact prompt ids.

    Policy turns pass ``prompt_ids`` so the trajectory keeps the exact tokens the policy saw;
    simulator roles pass ``messages`` and, where the backend can enforce it, a JSON schema.
    """

    sampling: Sampling
    messages: tuple[dict[str, Any], ...] | None = None
    prompt_ids: tuple[int, ...] | None = None
    json_schema: dict[str, Any] | None = field(default=None, hash=False)
    adapter: bool = True  # False: run the base model with the LoRA adapter switched off
    logprobs: bool = False
    thinking: bool | None = None  # `messages`: enable_thinking for templates that know it (None: their default)

    def __post_init__(self):
        if (self.messages is None) == (self.prompt_ids is None):
            raise ValueError("GenRequest needs exactly one of messages or prompt_ids")


@dataclass(frozen=True)
class Completion:
    text: str
    num_tokens: int  # generated tokens
    prompt_tokens: int
    finish_reason: str  # "stop" or "length"
    token_ids: tuple[int, ...] = ()  # exactly the generated ids, a final end-of-turn token included
    ended_with_eos: bool = False  # the last of token_ids is the end-of-turn token
    logprobs: tuple[float, ...] | None = None


@dataclass
class BatchTimes:
    """Where a local backend's time went in one generate_batch call: the prompt's forward
    (prefill, up to the first token's logits) and the token-by-token rest (decode), and the
    prompt tokens fed to the model or taken from its key/value cache instead."""

    prefill_s: float = 0.0
    decode_s: float = 0.0
    fed_tokens: int = 0
    reused_tokens: int = 0


class GenerationError(RuntimeError):
    """A backend could not answer one request (context overflow, server failure, ...)."""

    reason = "simulator_error"  # the abort reason of a trajectory this ends


class ContextLimit(GenerationError):
    """A request whose prompt plus its new tokens does not fit the model's context window."""

    reason = "context_limit"


class ServerUnreachable(GenerationError):
    """A remote server did not answer, retries included (connection, timeout, 429, 5xx)."""

    reason = "simulator_unreachable"


class Backend(Protocol):
    name: str  # "transformers", "llama_cpp", "openai"
    model_id: str  # identity of the weights, part of the simulation cache key
    max_batch: int

    def batch_key(self, request: GenRequest) -> tuple:
        """Requests with equal keys may share one batched forward."""

    def generate_batch(self, requests: list[GenRequest]) -> list[Completion | GenerationError]:
        """Blocking; runs in the generation service's worker thread."""

    def close(self) -> None: ...

    # A remote backend implements `async def agenerate(request) -> Completion` instead of
    # generate_batch (the service then sends each request as it comes; the server batches),
    # and `async def aclose()` instead of close().
