"""`tasks import`: task sets people already have, as a tasks file (JSONL) and the tool file its
tasks name.

- BFCL categories (through bfcl-eval's data): each question a task, its functions the task's
  tools, the ground truth's function names its expected calls, with the arguments that have
  exactly one accepted value (checked by code; the others are left to the verifier).
- The reference pool format's queries: a list of {"query", "api_list"} entries, where api_list
  holds tool schemas (OpenAI-style or bare functions, with toolset_name/category beside them as
  in the reference pool), ToolBench-style API docs (tool_name, api_name, required_parameters,
  ...), or names of tools already in a pool; "relevant APIs" become expected calls.

A name two sources use for different schemas gets a suffix in both files, so every task keeps
the tools it was written for.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson

from trustee_lite.env.pool.tools import normalize_tool, read_document, safe_name, unique_name
from trustee_lite.errors import UserError

TOOLBENCH_TYPES = {"string": "string", "str": "string", "number": "number", "integer": "integer", "int": "integer",
                   "float": "number", "boolean": "boolean", "bool": "boolean", "array": "array", "object": "object",
                   "enum": "string", "date": "string", "time (24-hour hh:mm)": "string", "geopoint (latitude, longitude)": "string"}


class ToolFile:
    """The tools the imported tasks use, grouped category -> toolset, one schema per name."""

    def __init__(self):
        self.groups: dict[str, dict[str, list[dict]]] = {}
        self.by_name: dict[str, dict] = {}

    def add(self, function: dict, category: str, toolset: str) -> str:
        """The name the tool has in the file (the same schema under one name once)."""
        name = function["name"]
        if name in self.by_name and self.by_name[name] == function:
            return name
        if name in self.by_name:
            name = unique_name(name, set(self.by_name))
            function = {**function, "name": name}
        self.by_name[name] = function
        self.groups.setdefault(category, {}).setdefault(toolset, []).append({"type": "function", "function": function})
        return name

    @property
    def count(self) -> int:
        return len(self.by_name)


def from_bfcl(category: str, limit: int | None) -> tuple[list[dict], ToolFile]:
    """A BFCL category's questions as tasks (single-turn categories with a ground truth)."""
    from trustee_lite.evaluation import bfcl

    if category not in bfcl.AST_CATEGORIES:
        raise UserError("tasks import bfcl", f"{category!r}: only single-turn categories with a ground truth can be "
                                             f"imported ({', '.join(bfcl.AST_CATEGORIES)})")
    tools, rows = ToolFile(), []
    for item in bfcl.load(category, limit):
        names = {f["name"]: tools.add(bfcl.to_tool(f)["function"], "bfcl", category) for f in item.functions}
        query = "\n".join(m["content"] for m in bfcl.conversation(item) if m["role"] == "user").strip()
        calls = []
        for answer in item.answer or ():
            for name, arguments in answer.items():
                exact = {k: v[0] for k, v in arguments.items() if isinstance(v, list) and len(v) == 1 and v[0] != ""}
                calls.append({"name": names.get(name, name), "arguments": exact} if exact else names.get(name, name))
        rows.append({"id": item.id, "query": query, "tools": list(names.values()), "expected_calls": calls})
    return rows, tools


def from_pool_queries(path: Path) -> tuple[list[dict], ToolFile]:
    """The reference format's queries: [{"query": ..., "api_list": [...]}, ...]."""
    data = read_document(path)
    if isinstance(data, dict):
        data = data.get("queries", data.get("tasks"))
    if not isinstance(data, list) or not data:
        raise UserError(path.name, 'must be a list of {"query": ..., "api_list": [...]} entries')
    tools, rows = ToolFile(), []
    for i, entry in enumerate(data):
        place = f"{path.name}: [{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("query"), str) or not entry["query"].strip():
            raise UserError(place, 'must be an object with a "query" string and an "api_list"')
        apis = entry.get("api_list")
        if not isinstance(apis, list) or not apis:
            raise UserError(f"{place}.api_list", "must be a non-empty list of tools or tool names")
        names, toolbench = [], {}
        for j, api in enumerate(apis):
            where = f"{place}.api_list[{j}]"
            if isinstance(api, str) and api.strip():
                names.append(api.strip())  # a tool of an existing pool
            elif isinstance(api, dict) and "api_name" in api:
                function, category, toolset = _toolbench_api(api, where)
                names.append(tools.add(function, category, toolset))
                toolbench[(str(api.get("tool_name", "")), str(api["api_name"]))] = names[-1]
            else:
                schema, _ = normalize_tool(api, where)
                keys = api if isinstance(api, dict) else {}
                names.append(tools.add(schema["function"], str(keys.get("category") or "imported"),
                                       str(keys.get("toolset_name") or "imported")))
        row = {"id": str(entry.get("query_id", entry.get("id", i + 1))), "query": entry["query"].strip(), "tools": names}
        relevant = [toolbench.get((str(a[0]), str(a[1]))) for a in entry.get("relevant APIs") or []
                    if isinstance(a, list) and len(a) == 2]
        if relevant and all(relevant):
            row["expected_calls"] = relevant
        rows.append(row)
    return rows, tools


def _toolbench_api(api: dict, where: str) -> tuple[dict, str, str]:
    """A ToolBench API doc as a function schema: name `{api}_for_{tool}`, its parameters typed."""
    tool = str(api.get("tool_name") or "tool")
    properties, required = {}, []
    for key, is_required in (("required_parameters", True), ("optional_parameters", False)):
        for p in api.get(key) or []:
            if not isinstance(p, dict) or not isinstance(p.get("name"), str):
                raise UserError(f"{where}.{key}", 'each parameter must be an object with a "name"')
            kind = TOOLBENCH_TYPES.get(str(p.get("type", "string")).strip().lower(), "string")
            properties[p["name"]] = {"type": kind, "description": str(p.get("description") or "")}
            if is_required:
                required.append(p["name"])
    function = {"name": safe_name(f"{api['api_name']}_for_{tool}"), "description": str(api.get("api_description") or ""),
                "parameters": {"type": "object", "properties": properties, "required": required}}
    return function, str(api.get("category_name") or "imported"), tool


def write(rows: list[dict], tools: ToolFile, out: Path, tools_out: Path | None) -> None:
    """The tasks as JSONL at `out`; the tool file (JSON) at `tools_out` when the tasks bring tools."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    if tools_out is not None and tools.count:
        tools_out.write_text(json.dumps(tools.groups, indent=1, ensure_ascii=False), encoding="utf-8")


def summary(rows: list[dict], tools: ToolFile, out: Path, tools_out: Path | None) -> dict[str, Any]:
    return {"out": str(out.resolve()), "tasks": len(rows), "tools": tools.count,
            "tools_file": str(tools_out.resolve()) if tools_out is not None and tools.count else None,
            "checked_arguments": sum(isinstance(c, dict) for r in rows for c in r.get("expected_calls", []))}
