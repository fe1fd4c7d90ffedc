"""The openai backend: the simulator behind any OpenAI-compatible server (vLLM, SGLang,
llama.cpp's server, Ollama), through the `openai` client. The server does the batching; this
side bounds the requests in flight, optionally their rate, and retries what may pass later
(connection errors, timeouts, 429, 5xx) with exponential backoff and jitter; other 4xx answers
are never retried. The API key is read from the environment variable the recipe names and is
never written anywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random

from trustee_lite.config import SimulatorConfig
from trustee_lite.errors import UserError
from trustee_lite.lm.base import Backend, Completion, ContextLimit, GenerationError, GenRequest, ServerUnreachable
from trustee_lite.lm.llama_cpp import grammar_schema

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0


def api_key(cfg: SimulatorConfig, place: str) -> str:
    if cfg.api_key_env is None:
        return "none"  # local servers take any key
    key = os.environ.get(cfg.api_key_env)
    if not key:
        raise UserError(f"{place}.api_key_env", f"the environment variable {cfg.api_key_env} is not set")
    return key


def check_reachable(cfg: SimulatorConfig, place: str) -> None:
    """Before any work: the server answers at base_url (any HTTP answer counts)."""
    import openai

    client = openai.OpenAI(base_url=cfg.base_url, api_key=api_key(cfg, place), max_retries=0, timeout=PROBE_TIMEOUT_S)
    try:
        client.models.list()
    except (openai.APIConnectionError, openai.APITimeoutError) as err:
        raise UserError(f"{place}.base_url", f"cannot reach the simulator server at {cfg.base_url}: {err}") from None
    except openai.APIStatusError:
        pass  # it answered; some servers have no /models
    finally:
        client.close()


def response_format(kind: str, schema: dict | None) -> dict | None:
    if schema is None or kind == "none":
        return None
    schema = grammar_schema(schema)  # llama.cpp-based servers build a grammar from it too
    if kind == "json_object":
        return {"type": "json_object", "schema": schema}
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


def retry_delay(attempt: int, base_s: float, cap_s: float = 30.0) -> float:
    """Full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return random.uniform(0.0, min(cap_s, base_s * 2**attempt))


def transient(err: Exception) -> bool:
    """Worth retrying: the server may answer later."""
    import openai

    if isinstance(err, (openai.APIConnectionError, openai.APITimeoutError)):
        return True
    if isinstance(err, openai.APIStatusError):
        return err.status_code == 429 or err.status_code >= 500
    return False


class OpenAIBackend(Backend):
    name = "openai"
    remote = True

    def __init__(self, cfg: SimulatorConfig, place: str):
        import openai

        self.cfg = cfg
        self.place = place
        self.model_id = f"{cfg.base_url}|{cfg.model}"  # the cache key includes server and model
        self.max_batch = 1
        self.client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key=api_key(cfg, place), max_retries=0,
                                         timeout=cfg.timeout_s)
        self.consecutive_failures = 0
        self._gate: asyncio.Semaphore | None = None
        self._throttle = None

    @classmethod
    def check_runnable(cls, cfg: SimulatorConfig, place: str) -> None:
        check_reachable(cfg, place)

    def _limits(self):
        if self._gate is None:  # made inside the running loop
            self._gate = asyncio.Semaphore(self.cfg.max_in_flight)
            if self.cfg.requests_per_second:
                from asyncio_throttle import Throttler

                self._throttle = Throttler(rate_limit=self.cfg.requests_per_second, period=1.0)
        return self._gate, self._throttle or contextlib.nullcontext()

    async def agenerate(self, request: GenRequest) -> Completion:
        gate, throttle = self._limits()
        s = request.sampling
        kwargs = dict(model=self.cfg.model, messages=list(request.messages), max_tokens=s.max_new_tokens,
                      temperature=s.temperature, top_p=s.top_p, seed=s.seed & 0x7FFF_FFFF)
        if s.frequency_penalty:
            kwargs["frequency_penalty"] = s.frequency_penalty
        fmt = response_format(self.cfg.response_format, request.json_schema)
        if fmt is not None:
            kwargs["response_format"] = fmt
        if request.thinking is not None:  # vLLM and SGLang pass these to the chat template
            kwargs["extra_body"] = {"chat_template_kwargs": {"enable_thinking": request.thinking}}
        last: Exception | None = None
        for attempt in range(self.cfg.net_retries + 1):
            if attempt:
                await asyncio.sleep(retry_delay(attempt - 1, self.cfg.backoff_s))
            try:
                async with gate, throttle:
                    response = await self.client.chat.completions.create(**kwargs)
            except Exception as err:  # noqa: BLE001 - sorted just below
                if not transient(err):
                    kind = ContextLimit if "context length" in str(err).lower() else GenerationError
                    raise kind(f"{self.cfg.base_url}: {_describe(err)}") from None
                last = err
                log.info("%s: %s (attempt %d of %d)", self.cfg.base_url, _describe(err), attempt + 1,
                         self.cfg.net_retries + 1)
                continue
            self.consecutive_failures = 0
            return _completion(response)
        self.consecutive_failures += 1
        if self.consecutive_failures >= self.cfg.max_consecutive_failures:
            raise UserError(f"{self.place}.base_url", f"the simulator server at {self.cfg.base_url} failed "
                            f"{self.consecutive_failures} calls in a row ({_describe(last)}); stopped, the "
                            "run record is kept (run the same command to resume)")
        raise ServerUnreachable(f"{self.cfg.base_url}: {_describe(last)}")

    async def aclose(self) -> None:
        await self.client.close()


def _completion(response) -> Completion:
    choice = response.choices[0]
    text = choice.message.content or ""
    usage = response.usage
    return Completion(text=text, num_tokens=usage.completion_tokens if usage else max(1, len(text) // 4),
                      prompt_tokens=usage.prompt_tokens if usage else 0,
                      finish_reason="length" if choice.finish_reason == "length" else "stop")


def _describe(err: Exception | None) -> str:
    status = getattr(err, "status_code", None)
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"HTTP {status}: {text}" if status else text
