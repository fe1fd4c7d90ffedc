"""What every generation backend takes and returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trustee_lite.lm.gpu_monitor import GpuMonitor


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


def template_kwargs(template: str, thinking: bool | None) -> dict[str, Any]:
    """A request's `thinking` as chat-template arguments: ``enable_thinking`` for templates that
    know it, when the recipe chooses (None: the template's own default)."""
    return {"enable_thinking": thinking} if thinking is not None and "enable_thinking" in template else {}


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
    prompt tokens fed to the model or taken from its key/value cache instead; and, with compiled
    decoding, the time of the calls that compiled a new graph."""

    prefill_s: float = 0.0
    decode_s: float = 0.0
    fed_tokens: int = 0
    reused_tokens: int = 0
    compile_s: float = 0.0  # of the decode, the first calls of newly compiled shapes (compiling)


class GenerationError(RuntimeError):
    """A backend could not answer one request (context overflow, server failure, ...)."""

    reason = "simulator_error"  # the abort reason of a trajectory this ends


class ContextLimit(GenerationError):
    """A request whose prompt plus its new tokens does not fit the model's context window."""

    reason = "context_limit"


class ServerUnreachable(GenerationError):
    """A remote server did not answer, retries included (connection, timeout, 429, 5xx)."""

    reason = "simulator_unreachable"


class Backend:
    """What a generation backend is: every capability one may offer is declared here, with the
    default of a backend that lacks it; callers ask these, never `hasattr`.

    A local backend overrides `generate_batch` (blocking; the generation service gathers
    requests into batches for it, in its worker thread). A remote backend sets `remote` and
    overrides `agenerate` instead (the service sends each request as it comes; the server
    batches). The policy's backend also trains: `attach_lora`, `set_mode`, `weights_changed`.
    """

    name: str = ""  # "transformers", "llama_cpp", "openai"
    model_id: str = ""  # identity of the weights, part of the simulation cache key
    max_batch: int = 1
    remote: bool = False  # on a server: no local files, requests sent one by one (agenerate)
    times: BatchTimes | None = None  # where the last generate_batch call's time went (None: not kept)
    selective_logits: bool = True  # the model's forward takes `logits_to_keep` as a list of positions
    compiled_decode: bool = False  # decodes with static caches and a compiled step (static_cache.py)
    mixed_adapters: bool = False  # one batch may mix rows with the adapter on and off (batch_key says)

    @classmethod
    def check_runnable(cls, cfg, place: str) -> None:
        """Refuse, before anything loads, a model section this machine cannot run (UserError)."""

    def batch_key(self, request: GenRequest) -> tuple:
        """Requests with equal keys may share one batched forward."""
        return ()

    def generate_batch(self, requests: list[GenRequest]) -> list[Completion | GenerationError]:
        """Blocking; runs in the generation service's worker thread."""
        raise NotImplementedError(f"the {self.name} backend generates one request at a time (agenerate)")

    async def agenerate(self, request: GenRequest) -> Completion:
        """A remote backend's one request; raises GenerationError if it failed."""
        raise NotImplementedError(f"the {self.name} backend generates in batches (generate_batch)")

    def gpu_monitor(self) -> GpuMonitor | None:
        """What samples the GPU this backend runs on during a training step (None: no GPU here)."""
        return None

    def close(self) -> None:
        """Free the model (a local backend)."""

    async def aclose(self) -> None:
        """Close inside the event loop (a remote client's connections); by default, close()."""
        self.close()

    # -- training: the policy's backend puts a trainable adapter on the weights it serves ------
    def attach_lora(self, lora, gradient_checkpointing: bool):
        """Put a trainable LoRA adapter on the served model and return that model."""
        raise NotImplementedError(f"the {self.name} backend cannot train")

    def set_mode(self, training: bool) -> None:
        """Before (True) and after (False) a training update."""

    def weights_changed(self) -> None:
        """The adapter's weights changed (an update, a loaded checkpoint): drop what depended on them."""
