"""The run sections of a recipe: where the tools come from, rollouts, the knob table and the
curriculum, the simulate and train commands' settings, and the recipe that holds every section."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, ValidationInfo, model_validator

from trustee_lite.config.common import (
    FieldProblem,
    Level,
    NonNegFloat,
    NonNegInt,
    PositiveInt,
    Probability,
    Section,
    base_folder,
    local_path,
)
from trustee_lite.config.models import PolicyConfig, SimulatorConfig
from trustee_lite.records import KnobValues

KNOB_NAMES = tuple(KnobValues.__dataclass_fields__)  # the one list of knob names
KnobName = Literal[KNOB_NAMES]
# How the curriculum estimates success: a rolling window, an EMA, or the last batch (the paper's).
ESTIMATORS = ("window", "ema", "batch")
# How a trajectory's advantage reaches its tokens (train/grpo.py, docs/method.md).
ADVANTAGE_MODES = ("uniform", "linear", "relu", "sign", "sign-linear")


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
        if self.file is not None and not local_path(base_folder(info), self.file).is_file():
            raise FieldProblem("file", f"file not found: {local_path(base_folder(info), self.file)}")
        for i, spec in enumerate(self.openapi):
            if not local_path(base_folder(info), spec).is_file():
                raise FieldProblem(f"openapi[{i}]", f"file not found: {local_path(base_folder(info), spec)}")
        return self

    @property
    def builtin(self) -> bool:
        """No source named: the built-in library."""
        return self.file is None and not self.openapi and not self.mcp and self.synthesize is None


class TasksConfig(Section):
    """The user's own tasks (env/task_file.py for the format, env/task_source.py for the draws)."""

    file: str  # JSONL, JSON, YAML or CSV: one task per row
    mode: Literal["replace", "mix", "examples"] = "replace"
    from_file: Probability = 0.5  # mix: the share of task slots filled from the file
    examples: Annotated[int, Field(ge=1, le=10)] = 3  # examples: file tasks shown to the generator per draft
    holdout: Annotated[float, Field(ge=0, lt=1)] = 0.0  # a seeded share kept out of training (eval --tasks)

    @model_validator(mode="after")
    def _file_exists(self, info: ValidationInfo):
        if not local_path(base_folder(info), self.file).is_file():
            raise FieldProblem("file", f"file not found: {local_path(base_folder(info), self.file)}")
        return self


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
    estimator: Literal[ESTIMATORS] = "window"  # "batch" is the paper's per-batch rule
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
    advantage_mode: Literal[ADVANTAGE_MODES] = "uniform"
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
    tasks: TasksConfig | None = None  # the user's own tasks; none: every task is generated
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
        return s.backend == p.backend == "transformers" and (p.model, p.gguf_file, p.device, p.dtype, p.load_in_4bit) == (
            s.model, s.gguf_file, s.device, s.dtype, s.load_in_4bit)
