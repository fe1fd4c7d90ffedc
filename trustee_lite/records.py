"""The data that crosses module boundaries, in the order the method makes it: knob values,
task drafts and tasks, tool calls, turns, trajectories, and the record of a training step (with
its update's statistics and its times)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal


@dataclass(frozen=True)
class KnobValues:
    """Every difficulty knob's value for one task (from a level; config.KnobRule is the rule)."""

    num_tools: int
    num_calls: int  # approximate number of distinct tool calls the task needs
    persona: int  # 0 expert, 1 beginner, 2 novice
    ambiguity: int  # 0 clear, 1 somewhat ambiguous, 2 highly ambiguous
    turns: int  # expected turns: 0 one or two, 1 a few, 2 many
    num_criteria: int  # verifier criteria judged (the first n of 5)
    system_prompt: int  # 0 detailed guide ... 3 "You are a helpful assistant."
    max_user_turns: int
    max_assistant_turns: int
    max_tool_turns: int


@dataclass(frozen=True)
class ExpectedCall:
    """A call a task expects; with `arguments`, code checks that some well-formed call of that
    name gave those values (env/verifier.py), before the verifier is asked."""

    name: str
    arguments: dict[str, Any] | None = field(default=None, hash=False)


@dataclass(frozen=True)
class Task:
    index: int  # position of the task in its run
    category: str
    tools: tuple[dict[str, Any], ...] = field(hash=False)
    knobs: KnobValues
    user_intent: str
    expected_tool_calls: tuple[str, ...]
    user_persona: str
    first_user_query: str
    origin: str | None = None  # "FILE#ID" for a task from the user's tasks file; None: generated
    checks: tuple[ExpectedCall, ...] = ()  # expected calls with arguments, checked by code

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(t["function"]["name"] for t in self.tools)


@dataclass(frozen=True)
class TaskDraft:
    """One task slot as drawn: its level, knobs and tools, and the generator's task or, when it
    gave no usable one, why (`failure`). Recorded as is, played only when `task` is set."""

    index: int
    level: int
    category: str
    knobs: KnobValues
    tool_names: tuple[str, ...]
    task: Task | None = None
    failure: str | None = None
    origin: str | None = None  # as Task.origin


@dataclass(frozen=True)
class ToolCall:
    name: str | None
    arguments: dict[str, Any] = field(default_factory=dict, hash=False)
    raw: str = ""
    error: str | None = None  # why the call is malformed; None for a well-formed call

    @property
    def malformed(self) -> bool:
        return self.error is not None


@dataclass(frozen=True)
class ToolResult:
    call: ToolCall
    result: str  # what the policy is shown (truncated)
    reward: int  # -1, 0 or 1


@dataclass(frozen=True)
class Turn:
    role: Literal["assistant", "tool", "user"]
    content: str  # assistant: its whole text; user: the reply; tool: empty (see results)
    calls: tuple[ToolCall, ...] = ()  # assistant turns: the parsed tool calls
    results: tuple[ToolResult, ...] = ()  # tool turns: one result a call
    reward: float | None = None  # tool turns: mean of the call rewards; user turns: the user's grade


@dataclass(frozen=True)
class Trajectory:
    task_index: int
    rollout_index: int
    turns: tuple[Turn, ...]
    end_reason: str  # user_done, max_*_turns, token_budget, aborted, ...
    final_reward: float | None  # None when aborted: masked out of the loss and group statistics
    verifier_reasoning: str = ""
    abort_reason: str | None = None
    token_ids: tuple[int, ...] = ()  # every token the policy saw and produced, in order
    policy_mask: tuple[int, ...] = ()  # 1 where the policy generated the token
    logprobs: tuple[float, ...] = ()  # log-prob of each token at sampling time (0.0 where mask is 0)
    prompt_tokens: int = 0  # length of the first prompt (system, tools, first query)

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    @property
    def policy_tokens(self) -> int:
        return sum(self.policy_mask)

    @property
    def has_tool_call(self) -> bool:
        return has_tool_call(self.turns)

    def rewards(self, role: str) -> list[float]:
        """Per-turn rewards of the tool or user turns."""
        return [t.reward for t in self.turns if t.role == role and t.reward is not None]

    def assistant_turn_rewards(self) -> list[float | None]:
        """The reward r of each assistant turn, in order (the turn-level advantage modes scale
        by it): for a turn with calls, the mean reward of its calls (the tool turn after it;
        calls past the cap count -1); for a turn without calls, the user simulator's grade of
        it. A turn nobody answered (its calls or reply cut by a turn cap, the token budget or
        the end of the episode) takes the trajectory's final reward (None when aborted)."""
        out = []
        for i, turn in enumerate(self.turns):
            if turn.role != "assistant":
                continue
            after = self.turns[i + 1] if i + 1 < len(self.turns) else None
            answered = after is not None and after.reward is not None and after.role == ("tool" if turn.calls else "user")
            out.append(after.reward if answered else self.final_reward)
        return out


def has_tool_call(turns) -> bool:
    """Whether any assistant turn made a tool call (a trajectory without one gets -1)."""
    return any(t.calls for t in turns if t.role == "assistant")


@dataclass(frozen=True)
class UpdateStats:
    """What one GRPO update did (the learner's answer to one training step's samples)."""

    loss: float | None
    pg_loss: float | None
    kl: float | None
    grad_norm: float | None
    learning_rate: float
    clip_fraction: float | None
    policy_tokens: int
    samples: int
    optimizer_steps: int
    seconds: float

    COLUMNS = ("samples", "loss", "pg_loss", "kl", "grad_norm", "learning_rate", "clip_fraction")  # in `steps`


@dataclass(frozen=True)
class StepTimes:
    """Seconds of a training step by kind (metrics.time_split): the policy's generation (its prompt
    forwards and its decoding), simulation, training (the update and its checkpoint), and the
    waiting that none of them covers."""

    wall_s: float
    policy_gen_s: float
    simulation_s: float
    training_s: float
    other_s: float
    policy_prefill_s: float = 0.0
    policy_decode_s: float = 0.0
    update_s: float = 0.0
    checkpoint_s: float = 0.0
    compile_s: float = 0.0  # of generation, calls that compiled a new decode graph (compiled decoding)


@dataclass(frozen=True)
class StepRecord:
    """One committed training step: a row of the `steps` table (row() gives its columns)."""

    step: int
    level: int
    next_level: int
    knobs: str  # JSON of the knob values at `level`
    tasks: int  # tasks the generator filled
    episodes: int
    aborted: int
    abort_reasons: str  # JSON: reason -> count
    mean_reward: float | None
    std_reward: float | None
    success_rate: float | None  # share of the step's finished episodes with a reward above 0
    signal: float | None  # the curriculum's signal from this step: its mean success reward (curriculum.py)
    signal_rolling: float | None  # the estimator's value after this step: what moved the level
    mean_tool_reward: float | None
    mean_user_reward: float | None
    policy_tokens: int
    simulator_tokens: int
    cache_hits: int
    cache_misses: int
    update: UpdateStats
    times: StepTimes
    checkpoint: str
    prefill_tokens: int = 0  # policy prompt tokens the model encoded
    reused_tokens: int = 0  # ... and those whose keys and values came from the episode's earlier turns
    gpu_util: float | None = None  # mean GPU utilisation over the step, percent (NVML; None without a GPU)
    gpu_mem_gib: float | None = None  # the most device memory in use at any sample of the step

    def row(self) -> dict[str, Any]:
        """The step's columns: its own fields, the update's columns and every time, flat."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, UpdateStats):
                out.update({name: getattr(value, name) for name in UpdateStats.COLUMNS})
            elif isinstance(value, StepTimes):
                out.update({t.name: getattr(value, t.name) for t in fields(value)})
            else:
                out[f.name] = value
        return out
