"""The one tool-call parser: Hermes-style ``<tool_call>{json}</tool_call>`` blocks in a policy turn.

Used by the rollout and by evaluation. Blocks are found by their tags and parsed with a real JSON
parser; a block that cannot be read is kept as a malformed call with the reason, never dropped.
Only the text after a think block (``<think>...</think>``) counts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trustee_lite.jsontext import first_object, strip_fence, strip_think
from trustee_lite.records import ToolCall

OPEN, CLOSE = "<tool_call>", "</tool_call>"
__all__ = ["OPEN", "CLOSE", "ToolCall", "ParsedTurn", "parse_turn", "parse_block", "call_from_object", "format_call"]


@dataclass(frozen=True)
class ParsedTurn:
    content: str  # the text outside the tool-call blocks, stripped
    calls: tuple[ToolCall, ...]


def parse_turn(text: str) -> ParsedTurn:
    """Split a policy turn into its free text and its tool calls (in order). A think block is
    the policy's private reasoning: calls written inside it are not calls, and it is not content."""
    text = strip_think(text)
    calls, outside, pos = [], [], 0
    while True:
        start = text.find(OPEN, pos)
        if start < 0:
            outside.append(text[pos:])
            break
        outside.append(text[pos:start])
        body_start = start + len(OPEN)
        end = text.find(CLOSE, body_start)
        nested = text.find(OPEN, body_start)
        if end < 0 or (0 <= nested < end):
            # Unclosed block: it runs to the next opening tag or to the end of the turn.
            stop = nested if nested >= 0 else len(text)
            calls.extend(parse_block(text[body_start:stop], closed=False))
            pos = stop
            continue
        calls.extend(parse_block(text[body_start:end]))
        pos = end + len(CLOSE)
    return ParsedTurn(content="".join(outside).strip(), calls=tuple(calls))


def parse_block(body: str, closed: bool = True) -> list[ToolCall]:
    """Read one block: a call object, or a JSON list of call objects (as SmolLM2 writes them)."""
    raw = body.strip()
    payload = strip_fence(raw)
    try:
        obj = json.loads(payload)
    except json.JSONDecodeError as err:
        obj = first_object(payload)
        if obj is None:
            suffix = "" if closed else " (missing </tool_call>)"
            return [ToolCall(name=None, raw=raw, error=f"invalid JSON: {err.msg} at char {err.pos}{suffix}")]
    if isinstance(obj, list) and obj:
        return [call_from_object(item, json.dumps(item, ensure_ascii=False)) for item in obj]
    return [call_from_object(obj, raw)]


def call_from_object(obj: Any, raw: str) -> ToolCall:
    """A call from parsed JSON: ``{"name": str, "arguments": object}`` (arguments may be a JSON string)."""
    if not isinstance(obj, dict):
        return ToolCall(name=None, raw=raw, error=f"expected a JSON object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        return ToolCall(name=None, raw=raw, error='missing "name"')
    args = obj.get("arguments", obj.get("parameters", {}))
    if isinstance(args, str):
        try:
            args = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            return ToolCall(name=name.strip(), raw=raw, error='"arguments" is a string that is not JSON')
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return ToolCall(name=name.strip(), raw=raw, error=f'"arguments" must be an object, got {type(args).__name__}')
    return ToolCall(name=name.strip(), arguments=args, raw=raw)


def format_call(name: str, arguments: dict[str, Any]) -> str:
    """The Hermes-style text of one call, as the policy is asked to write it."""
    return f"{OPEN}\n{json.dumps({'name': name, 'arguments': arguments}, ensure_ascii=False)}\n{CLOSE}"
