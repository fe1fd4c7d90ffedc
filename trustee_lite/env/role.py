"""The shape every simulator role has: a prompt, a JSON schema for its answer, and a parser.

A role is a pure function from its inputs to a RoleCall; the simulator client does the I/O
(cache, generation, retries). The rollout talks to roles through this shape only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, TypeVar

from jsonschema import Draft202012Validator

from trustee_lite.jsontext import loads_lenient

Out = TypeVar("Out")


class RoleOutputError(ValueError):
    """A simulator answer that cannot be used: not JSON of the role's schema (`parse`), or JSON
    that breaks one of the role's own rules (`rule`, e.g. a first query naming a tool)."""

    def __init__(self, message: str, kind: str = "rule"):
        super().__init__(message)
        self.kind = kind


class SimulationFailed(RuntimeError):
    """A role gave no usable answer after its retries; the trajectory aborts with `reason`."""

    def __init__(self, reason: str, detail: str):
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True)
class RoleCall(Generic[Out]):
    role: str
    messages: tuple[dict[str, str], ...]
    schema: dict[str, Any] = field(hash=False)
    interpret: Callable[[dict[str, Any]], Out] = field(hash=False, compare=False)
    max_new_tokens: int | None = None  # this role's answer budget, when not the simulator's

    def parse(self, text: str) -> Out:
        """Defensive parse: find the JSON, check it against the schema, then the role's own rules."""
        try:
            obj = loads_lenient(text)
        except ValueError as err:
            raise RoleOutputError(str(err), "parse") from None
        if not isinstance(obj, dict):
            raise RoleOutputError(f"expected a JSON object, got {type(obj).__name__}", "parse")
        error = next(iter(Draft202012Validator(self.schema).iter_errors(obj)), None)
        if error is not None:
            where = ".".join(str(p) for p in error.path) or "answer"
            raise RoleOutputError(f"{where}: {error.message[:200]}", "parse")
        return self.interpret(obj)


def single_prompt(role: str, text: str, schema: dict[str, Any], interpret: Callable[[dict[str, Any]], Out]) -> RoleCall[Out]:
    """A role call whose whole prompt is one user message (works with every chat template)."""
    return RoleCall(role=role, messages=({"role": "user", "content": text},), schema=schema, interpret=interpret)


REWARD = {"type": "integer", "enum": [-1, 0, 1]}


def text_field(max_length: int, min_length: int = 0) -> dict[str, Any]:
    return {"type": "string", "minLength": min_length, "maxLength": max_length}


def tools_json(tools) -> str:
    """Tool schemas as compact JSON, one per line (a prompt stays short and readable)."""
    return "\n".join(json.dumps(t["function"], ensure_ascii=False, separators=(",", ":")) for t in tools)
