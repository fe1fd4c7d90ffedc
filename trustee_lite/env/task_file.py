"""The user's tasks file (the recipe's `tasks.file`, `eval --tasks`): JSONL, JSON, YAML or CSV,
one task per row with the user's first message (`query`) and the pool tools it may use, and
optionally its hidden goal, expected calls, persona, lowest level and id. Every problem is one
line naming the file and the line. Tool names are looked up in the pool once it is open
(`resolve`): a source's name or the safe name the pool gave it."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from trustee_lite.env.pool.tools import ToolPool
from trustee_lite.errors import UserError
from trustee_lite.records import ExpectedCall

SUFFIXES = (".jsonl", ".json", ".yaml", ".yml", ".csv")
FIELDS = ("query", "tools", "intent", "expected_calls", "persona", "level", "id")


@dataclass(frozen=True)
class FileTask:
    id: str
    place: str  # "tasks.jsonl:7", for messages
    query: str
    tools: tuple[str, ...]  # as written; pool names once resolved
    intent: str | None = None
    expected_calls: tuple[ExpectedCall, ...] = ()
    persona: str | None = None
    level: int | None = None

    @property
    def complete(self) -> bool:
        """Nothing is left for the task generator to write."""
        return bool(self.intent and self.expected_calls and self.persona)


def read_tasks(path: str | Path, need_tools: bool) -> list[FileTask]:
    """Every task of the file, checked; `need_tools`: each must name its tools."""
    path = Path(path)
    name = path.name
    if path.suffix.lower() not in SUFFIXES:
        raise UserError(name, f"a tasks file must end in {', '.join(SUFFIXES)}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(name, f"cannot read: {err}") from None
    rows = _rows(text, path.suffix.lower(), name)
    if not rows:
        raise UserError(name, "holds no tasks")
    tasks, seen = [], {}
    for line, row in rows:
        task = _task(row, f"{name}:{line}", need_tools, len(tasks) + 1)
        if task.id in seen:
            raise UserError(task.place, f"id {task.id!r} repeats the task at line {seen[task.id]}")
        seen[task.id] = line
        tasks.append(task)
    return tasks


def _rows(text: str, suffix: str, name: str) -> list[tuple[int, Any]]:
    """(line number, row) pairs."""
    if suffix == ".jsonl":
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise UserError(f"{name}:{number}", f"not JSON: {err.msg} (column {err.colno})") from None
        return rows
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        rows, line = [], 1
        for row in reader:
            if None in row:
                raise UserError(f"{name}:{line + 1}", f"more cells than the header's {len(reader.fieldnames)} columns")
            rows.append((line + 1, {k.strip(): _cell(k.strip(), v) for k, v in row.items() if v not in (None, "")}))
            line = reader.line_num
        return rows
    if suffix == ".json":
        return _json_items(text, name)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise UserError(f"{name}:{mark.line + 1 if mark else 1}", f"not YAML: {getattr(err, 'problem', err)}") from None
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        node = next(v for k, v in node.value if k.value == "tasks")
        data = data["tasks"]
    if data is None:
        return []
    if not isinstance(data, list):
        raise UserError(name, "must be a list of tasks (or a mapping with a 'tasks' list)")
    return [(item.start_mark.line + 1, row) for item, row in zip(node.value, data)]


def _json_items(text: str, name: str) -> list[tuple[int, Any]]:
    """A JSON list (or {"tasks": [...]}): each item with the line it starts on."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{name}:{err.lineno}", f"not JSON: {err.msg} (column {err.colno})") from None
    if isinstance(data, dict) and isinstance(data.get("tasks"), list):
        data = data["tasks"]
    elif not isinstance(data, list):
        raise UserError(name, "must be a list of tasks (or an object with a 'tasks' list)")
    try:  # the text parsed above, walked again for each item's line
        decoder, at, lines = json.JSONDecoder(), text.rindex("[", 0, text.index("{")) + 1 if "{" in text else 0, []
        for _ in data:
            while text[at] in " \t\r\n,":
                at += 1
            lines.append(text.count("\n", 0, at) + 1)
            at = decoder.raw_decode(text, at)[1]
    except (ValueError, IndexError):  # an odd layout: the items are numbered instead
        lines = list(range(1, len(data) + 1))
    return list(zip(lines, data))


def _cell(key: str, value: str) -> Any:
    """A CSV cell: lists as JSON or separated by ';', a level as a number."""
    value = value.strip()
    if key in ("tools", "expected_calls"):
        if value.startswith("["):
            try:
                return json.loads(value)
            except json.JSONDecodeError:
                return value  # refused below, with its line
        return [part.strip() for part in value.split(";") if part.strip()]
    if key == "level" and value.lstrip("-").isdigit():
        return int(value)
    return value


def _task(row: Any, place: str, need_tools: bool, number: int) -> FileTask:
    if not isinstance(row, dict):
        raise UserError(place, f"a task must be an object with a 'query', got {type(row).__name__}")
    unknown = sorted(set(row) - set(FIELDS))
    if unknown:
        raise UserError(place, f"unknown field {unknown[0]!r} (a task has: {', '.join(FIELDS)})")
    query = row.get("query")
    if not isinstance(query, str) or not query.strip():
        raise UserError(place, "query: the user's first message is required (a non-empty string)")
    tools = row.get("tools", [])
    if not isinstance(tools, list) or not all(isinstance(t, str) and t.strip() for t in tools):
        raise UserError(place, "tools: must be a list of tool names")
    if need_tools and not tools:
        raise UserError(place, "tools: required in modes replace and mix (the pool tools this task may use)")
    text = {}
    for key in ("intent", "persona"):
        value = row.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise UserError(place, f"{key}: must be a non-empty string")
        text[key] = value.strip() if value else None
    level = row.get("level")
    if level is not None and (not isinstance(level, int) or isinstance(level, bool) or not 1 <= level <= 100):
        raise UserError(place, f"level: must be a whole number from 1 to 100, got {level!r}")
    ident = row.get("id", number)
    if not isinstance(ident, (str, int)) or isinstance(ident, bool) or not str(ident).strip():
        raise UserError(place, f"id: must be a string or a number, got {ident!r}")
    calls = tuple(_expected_call(c, f"{place}: expected_calls[{i}]") for i, c in enumerate(_list(row, "expected_calls", place)))
    return FileTask(str(ident).strip(), place, query.strip(), tuple(t.strip() for t in tools), text["intent"], calls,
                    text["persona"], level)


def _list(row: dict, key: str, place: str) -> list:
    value = row.get(key, [])
    if not isinstance(value, list):
        raise UserError(place, f"{key}: must be a list")
    return value


def _expected_call(call: Any, place: str) -> ExpectedCall:
    if isinstance(call, str) and call.strip():
        return ExpectedCall(call.strip())
    if isinstance(call, dict) and isinstance(call.get("name"), str) and call["name"].strip() and set(call) <= {"name", "arguments"}:
        arguments = call.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise UserError(place, "arguments: must be an object of argument names and values")
        return ExpectedCall(call["name"].strip(), arguments or None)
    raise UserError(place, 'must be a tool name or {"name": ..., "arguments": {...}}')


def resolve(tasks: list[FileTask], pool: ToolPool) -> list[FileTask]:
    """The tasks with their tool names as the pool's (safe) names; an unknown tool, or an expected
    call outside the task's tools, is refused naming the line."""
    by_name = {name: name for name in pool.tools}
    by_name.update({pool.original(name): name for name in pool.tools if pool.original(name) not in by_name})
    out = []
    for task in tasks:
        tools = []
        for name in task.tools:
            if name not in by_name:
                raise UserError(task.place, f"tools: {name!r} is not in the recipe's tool pool ({len(by_name)} tools; "
                                            "see `python -m trustee_lite tools list RECIPE --names`)")
            tools.append(by_name[name])
        calls = []
        for call in task.expected_calls:
            name = by_name.get(call.name)
            if name is None or (tools and name not in tools):
                raise UserError(task.place, f"expected_calls: {call.name!r} is not one of "
                                            f"{'the task' if tools else 'the pool'}'s tools")
            calls.append(ExpectedCall(name, call.arguments))
        out.append(FileTask(task.id, task.place, task.query, tuple(tools), task.intent, tuple(calls), task.persona,
                            task.level))
    return out
