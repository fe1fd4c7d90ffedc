"""The data that crosses module boundaries: tasks, turns, trajectories."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .curriculum import Knobs
from .toolcalls import ToolCall


@dataclass(frozen=True)
class Task:
    index: int  # position of the task in its run
    category: str
    tools: tuple[dict[str, Any], ...] = field(hash=False)
    knobs: Knobs
    user_intent: str
    expected_tool_calls: tuple[str, ...]
    user_persona: str
    first_user_query: str

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(t["function"]["name"] for t in self.tools)


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
        return any(t.calls for t in self.turns if t.role == "assistant")

    def rewards(self, role: str) -> list[float]:
        """Per-turn rewards of the tool or user turns."""
        return [t.reward for t in self.turns if t.role == role and t.reward is not None]
