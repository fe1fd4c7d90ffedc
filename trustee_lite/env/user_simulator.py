"""Stage II: the user simulator. Replies as the task's person; an empty reply ends the episode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trustee_lite import prompts
from trustee_lite.env import transcript
from trustee_lite.env.role import REWARD, RoleCall, single_prompt, text_field, tools_json
from trustee_lite.records import Task, Turn

ROLE = "user_simulator"
SCHEMA = {
    "type": "object",
    "properties": {"response": text_field(600), "reward": REWARD},
    "required": ["response", "reward"],
}


@dataclass(frozen=True)
class UserReply:
    response: str  # empty: the task is done or clearly failed
    reward: int  # the user's grade of the assistant's latest message


def request(task: Task, turns: tuple[Turn, ...], max_chars: int) -> RoleCall[UserReply]:
    """``turns`` ends with the assistant message the user answers."""
    *history, latest = turns
    text = prompts.render(
        "user_simulator", persona=task.user_persona, intent=task.user_intent, first_query=task.first_user_query,
        tools=tools_json(task.tools), history=transcript.render(task.first_user_query, history, max_chars),
        latest=transcript.block(transcript.fit(transcript.turn_messages(latest), max_chars), "latest_message"),
    )

    def interpret(obj: dict[str, Any]) -> UserReply:
        return UserReply(response=obj["response"].strip(), reward=obj["reward"])

    return single_prompt(ROLE, text, SCHEMA, interpret)
