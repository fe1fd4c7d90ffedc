"""The conversation as every simulator role sees it: data, one JSON message per line inside
tags, never text the policy could extend with turns of its own.

Whatever the policy writes stays inside a JSON string: a forged "User: ..." line or a forged
tool result is just characters of its own message. `<` and `>` are written as JSON escapes
(\\u003c, \\u003e), so no message can close the tags around it either. Too long a conversation
is shortened in the middle of its longest texts, marked as shortened; every message, every
tool call and every result stays.
"""

from __future__ import annotations

import json
from typing import Any

from trustee_lite.env.toolcalls import parse_turn
from trustee_lite.jsontext import think_text
from trustee_lite.records import ToolCall, Turn

OPEN, CLOSE = "<conversation>", "</conversation>"
MIN_KEPT = 60  # characters a shortened text keeps at least (its start and its end)


def call_json(call: ToolCall) -> dict[str, Any]:
    """A tool call as data: its name and arguments, or why it could not be read and its raw text."""
    if call.malformed:
        return {"name": call.name, "unreadable": call.error, "raw": call.raw}
    return {"name": call.name, "arguments": call.arguments}


def messages(first_query: str, turns) -> list[dict[str, Any]]:
    """The conversation as messages: the first query, then every turn. An assistant message is
    its text outside the tool-call blocks, with its calls as data."""
    out: list[dict[str, Any]] = [{"role": "user", "content": first_query}]
    for turn in turns:
        out += turn_messages(turn)
    return out


def turn_messages(turn: Turn) -> list[dict[str, Any]]:
    if turn.role == "user":
        return [{"role": "user", "content": turn.content}]
    if turn.role == "assistant":
        message: dict[str, Any] = {"role": "assistant"}
        thinking = think_text(turn.content)  # present only when the roles are shown it (strip_thinking off)
        if thinking:
            message["thinking"] = thinking
        message["content"] = parse_turn(turn.content).content
        if turn.calls:
            message["tool_calls"] = [call_json(c) for c in turn.calls]
        return [message]
    return [{"role": "tool", "name": r.call.name, "content": r.result} for r in turn.results]


def line(message: dict[str, Any]) -> str:
    """One message as one line of JSON, with no character that could close a tag."""
    return json.dumps(message, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e")


def block(items: list[dict[str, Any]], tag: str = "conversation") -> str:
    return "\n".join([f"<{tag}>", *(line(m) for m in items), f"</{tag}>"])


def render(first_query: str, turns, max_chars: int) -> str:
    """The conversation block for a role prompt, within about `max_chars` characters."""
    return block(fit(messages(first_query, turns), max_chars))


def fit(items: list[dict[str, Any]], max_chars: int) -> list[dict[str, Any]]:
    """Shorten the longest texts (message contents) in their middle until the lines fit
    `max_chars`; nothing is dropped, calls are never touched. Texts are shortened to a common
    cap, the largest that fits (at least MIN_KEPT characters)."""
    if sum(len(line(m)) + 1 for m in items) <= max_chars:
        return items
    low, high = MIN_KEPT, max(len(m.get("content") or "") for m in items)
    while low < high:  # the largest cap whose lines fit
        cap = (low + high + 1) // 2
        if sum(len(line(_shorten(m, cap))) + 1 for m in items) <= max_chars:
            low = cap
        else:
            high = cap - 1
    return [_shorten(m, low) for m in items]


def _shorten(message: dict[str, Any], cap: int) -> dict[str, Any]:
    text = message.get("content") or ""
    if len(text) <= cap:
        return message
    marker = f" [... {len(text) - cap} characters shortened ...] "
    keep = max(cap - len(marker), 2)
    return {**message, "content": text[: keep - keep // 2] + marker + text[len(text) - keep // 2:]}


def parse(prompt: str, tag: str = "conversation") -> list[dict[str, Any]]:
    """The messages of a block in a prompt (what a role reads back; used by the tests)."""
    start = prompt.index(f"<{tag}>\n") + len(tag) + 3
    end = prompt.index(f"\n</{tag}>", start - 1)
    body = prompt[start:end]
    return [json.loads(text) for text in body.split("\n") if text]
