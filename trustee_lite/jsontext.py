"""Reading JSON out of model text: code fences, think tags and stray words around it.

A real parser does the work; these helpers only find where the JSON is (the repair fallback).
"""

from __future__ import annotations

import json
import re
from typing import Any


def strip_think(text: str) -> str:
    """Drop reasoning blocks (``<think>...</think>``); an unclosed one swallows the rest."""
    while "<think>" in text:
        start = text.index("<think>")
        end = text.find("</think>", start)
        text = text[:start] + ("" if end < 0 else text[end + len("</think>"):])
    # A template may open the block in the prompt, leaving only the closing tag in the output.
    if "</think>" in text:
        text = text.rsplit("</think>", 1)[1]
    return text


def think_text(text: str) -> str:
    """The text of the reasoning blocks that strip_think drops (a template may open the block in
    the prompt, leaving only the closing tag in the output)."""
    if "<think>" not in text and "</think>" in text:
        return text.rsplit("</think>", 1)[0].strip()
    return "\n".join(block.strip() for block in re.findall(r"<think>(.*?)(?:</think>|$)", text, re.DOTALL)).strip()


def strip_fence(text: str) -> str:
    """Remove a Markdown code fence (```json ... ```) around the text."""
    text = text.strip()
    if text.startswith("```"):
        text = text.split("\n", 1)[1] if "\n" in text else ""
        if text.rstrip().endswith("```"):
            text = text.rstrip()[:-3]
    return text.strip()


def first_object(text: str) -> dict[str, Any] | None:
    """The first complete JSON object in text, with anything around it ignored."""
    decoder = json.JSONDecoder(strict=False)
    start = text.find("{")
    while start >= 0:
        try:
            obj, _ = decoder.raw_decode(text, start)
            if isinstance(obj, dict):
                return obj
        except json.JSONDecodeError:
            pass
        start = text.find("{", start + 1)
    return None


def loads_lenient(text: str) -> Any:
    """Parse text as JSON; failing that, the first JSON object inside it. Raises ValueError."""
    body = strip_fence(strip_think(text))
    try:
        return json.loads(body, strict=False)  # raw newlines inside strings are common; accept them
    except json.JSONDecodeError as err:
        obj = first_object(body)
        if obj is None:
            raise ValueError(f"no JSON object found ({err.msg} at char {err.pos})") from None
        return obj
