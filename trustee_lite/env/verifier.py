"""Stage III: the verifier. Judges a whole trajectory on the first `num_criteria` criteria."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trustee_lite import prompts
from trustee_lite.env import transcript
from trustee_lite.env.role import REWARD, RoleCall, single_prompt, text_field, tools_json
from trustee_lite.records import Task, Turn

ROLE = "verifier"

CRITERIA = (
    "Goal: the assistant achieved the user's goal (or correctly established that it cannot be achieved).",
    "Tools: it called the expected tools, with correct and complete arguments.",
    "Honesty: everything it told the user comes from the conversation or the tool outputs; nothing is made up.",
    "Economy: it made no redundant, repeated or wrong tool calls.",
    "Style: its messages are concise and it reached the goal efficiently.",
)


@dataclass(frozen=True)
class Verdict:
    reward: int
    reasoning: str


def no_tool_call() -> Verdict:
    """The fixed verdict for a trajectory without any tool call (the verifier is not asked)."""
    return Verdict(reward=-1, reasoning="The assistant made no tool call.")


def missed_call(task: Task, turns: tuple[Turn, ...]) -> Verdict | None:
    """The fixed verdict -1 when the task expects a call with given arguments (a tasks file's
    expected_calls) and no well-formed call of that name gave them all; None when every such
    call was made (or the task has none) and the verifier judges."""
    made = [c for t in turns if t.role == "assistant" for c in t.calls if not c.malformed]
    for check in task.checks:
        if not any(c.name == check.name and all(k in c.arguments and same_value(c.arguments[k], v)
                                                for k, v in check.arguments.items()) for c in made):
            shown = ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in check.arguments.items())
            return Verdict(reward=-1, reasoning=f"The expected call {check.name}({shown}) was not made (checked by code).")
    return None


def same_value(got: Any, want: Any) -> bool:
    """Argument equality as a person means it: numbers by value (1 == 1.0), strings without case
    or surrounding spaces, lists and objects item by item."""
    if isinstance(want, bool) or isinstance(got, bool):
        return got is want
    if isinstance(want, (int, float)) and isinstance(got, (int, float)):
        return float(got) == float(want)
    if isinstance(want, str) and isinstance(got, str):
        return got.strip().casefold() == want.strip().casefold()
    if isinstance(want, list) and isinstance(got, list):
        return len(got) == len(want) and all(same_value(g, w) for g, w in zip(got, want))
    if isinstance(want, dict) and isinstance(got, dict):
        return got.keys() == want.keys() and all(same_value(got[k], w) for k, w in want.items())
    return got == want


def request(task: Task, turns: tuple[Turn, ...], num_criteria: int, max_chars: int) -> RoleCall[Verdict]:
    criteria = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(CRITERIA[: max(1, min(5, num_criteria))]))
    schema = {
        "type": "object",
        "properties": {"reasoning": text_field(1000, 1), "reward": REWARD},
        "required": ["reasoning", "reward"],
    }
    text = prompts.render(
        "verifier", first_query=task.first_user_query, intent=task.user_intent, persona=task.user_persona,
        expected_calls=", ".join(task.expected_tool_calls), tools=tools_json(task.tools),
        history=transcript.render(task.first_user_query, turns, max_chars), criteria=criteria,
    )

    def interpret(obj: dict[str, Any]) -> Verdict:
        return Verdict(reward=obj["reward"], reasoning=obj["reasoning"].strip())

    return single_prompt(ROLE, text, schema, interpret)
