"""Stage III: the verifier. Judges a whole trajectory on the first `num_criteria` criteria."""

from __future__ import annotations

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
