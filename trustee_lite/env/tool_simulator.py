"""Stage II: the tool simulator. Answers one tool call as the real service would, and grades it.

What code can check, code checks: an unknown tool and a call past the turn's cap are answered
without the model, and a call that cannot be read or breaks its schema is shown to the model
with the problems and graded -1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from trustee_lite import prompts
from trustee_lite.env import transcript
from trustee_lite.env.role import REWARD, RoleCall, single_prompt, text_field, tools_json
from trustee_lite.env.toolcalls import ToolCall
from trustee_lite.records import Task, Turn

ROLE = "tool_simulator"


@dataclass(frozen=True)
class ToolReply:
    result: str
    reward: int


def over_cap(index: int, cap: int) -> ToolReply | None:
    """The answer to a call past the turn's cap on parallel calls (no model needed), else None."""
    if index < cap:
        return None
    return ToolReply(result=f"Error: at most {cap} tool calls are run per turn; this call was not run.", reward=-1)


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
    shown = transcript.call_json(call) if not call.malformed else {**transcript.call_json(call), "raw": call.raw[:400]}
    notes = "" if not problems else (  # the problems quote the policy's values: data too
        "\nProblems code already found in this call (it is invalid; answer with the service's error), one JSON "
        "string per line:\n" + transcript.block([{"problem": p} for p in problems], "problems") + "\n"
    )
    text = prompts.render(
        "tool_simulator", tools=tools_json(task.tools),
        schema=json.dumps(tool["function"], ensure_ascii=False) if tool else "(none: the call could not be read)",
        intent=task.user_intent, history=transcript.render(task.first_user_query, turns, max_chars),
        call=transcript.block([shown], "call"), notes=notes,
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
