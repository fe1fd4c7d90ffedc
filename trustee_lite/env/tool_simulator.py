"""Stage II: the tool simulator. Answers one tool call as the real service would, and grades it.

What code can check, code checks: an unknown tool is answered without the model, and a call
that cannot be read or breaks its schema is shown to the model with the problems and graded -1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from trustee_lite import prompts
from trustee_lite.env.role import REWARD, RoleCall, single_prompt, text_field, transcript
from trustee_lite.env.toolcalls import ToolCall
from trustee_lite.records import Task, Turn

ROLE = "tool_simulator"


@dataclass(frozen=True)
class ToolReply:
    result: str
    reward: int


def unknown_tool(call: ToolCall, task: Task) -> ToolReply | None:
    """The answer to a call of a tool the task does not have (no model needed), else None."""
    if call.name is None or call.name in task.tool_names:
        return None
    return ToolReply(
        result=f"Error: unknown tool {call.name!r}. Available tools: {', '.join(task.tool_names)}.", reward=-1,
    )


def argument_problems(call: ToolCall, schema: dict[str, Any]) -> list[str]:
    """What is wrong with a call by its schema: unreadable, missing or mistyped arguments."""
    if call.malformed:
        return [f"The call could not be read: {call.error}."]
    params = schema["function"].get("parameters", {})
    return [
        f"{'.'.join(str(p) for p in e.path) or 'arguments'}: {e.message}"
        for e in sorted(Draft202012Validator(params).iter_errors(call.arguments), key=str)
    ][:5]


def request(task: Task, turns: tuple[Turn, ...], call: ToolCall, max_chars: int) -> RoleCall[ToolReply]:
    schema_of = {t["function"]["name"]: t for t in task.tools}
    tool = schema_of.get(call.name) if call.name else None
    problems = argument_problems(call, tool) if tool else [f"The call could not be read: {call.error}."]
    if call.malformed:
        shown = f"(unreadable) {call.raw[:400]}"
    else:
        shown = f"{call.name}({json.dumps(call.arguments, ensure_ascii=False)})"
    notes = "" if not problems else (
        "\nProblems already found in this call (the call is invalid; answer with the service's error):\n"
        + "\n".join(f"- {p}" for p in problems) + "\n"
    )
    text = prompts.render(
        "tool_simulator", schema=json.dumps(tool["function"], ensure_ascii=False) if tool else "(unknown: the call could not be read)",
        intent=task.user_intent, history=transcript(task.first_user_query, turns, max_chars), call=shown, notes=notes,
    )
    out_schema = {
        "type": "object",
        "properties": {"result": text_field(1500, 1), "reward": REWARD},
        "required": ["result", "reward"],
    }

    def interpret(obj: dict[str, Any]) -> ToolReply:
        # A call that breaks its schema is invalid whatever the model thinks of it.
        return ToolReply(result=obj["result"].strip(), reward=-1 if problems else obj["reward"])

    return single_prompt(ROLE, text, out_schema, interpret)
