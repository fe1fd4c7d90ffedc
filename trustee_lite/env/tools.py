"""The tool pool: OpenAI-style function schemas grouped category -> toolset -> tools, and sampling."""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from trustee_lite.env.schema_types import to_json_schema
from trustee_lite.errors import UserError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")
DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class ToolPool:
    groups: dict[str, dict[str, tuple[dict[str, Any], ...]]]  # category -> toolset -> tool schemas
    type_names_mapped: int = 0  # Python- or Java-flavoured type names the loader mapped to JSON Schema

    def normalised(self) -> str | None:
        """One line on what loading changed, or None."""
        if not self.type_names_mapped:
            return None
        return f"{self.type_names_mapped} type names (float, dict, any, ...) read as JSON Schema types"

    @property
    def tools(self) -> dict[str, dict[str, Any]]:
        """Every tool by name."""
        return {t["function"]["name"]: t for sets in self.groups.values() for tools in sets.values() for t in tools}

    def sample(self, num_tools: int, rng: random.Random) -> tuple[str, tuple[dict[str, Any], ...]]:
        """Draw a category, fill a pool from its toolsets (whole toolsets, in random order) until it
        holds num_tools, then sample num_tools of it. A small category gives all it has."""
        category = rng.choice(sorted(self.groups))
        toolsets = sorted(self.groups[category])
        rng.shuffle(toolsets)
        pool: list[dict[str, Any]] = []
        for name in toolsets:
            pool.extend(self.groups[category][name])
            if len(pool) >= num_tools:
                break
        return category, tuple(rng.sample(pool, min(num_tools, len(pool))))


def load_pool(file: str | None = None, categories: list[str] | None = None, place: str = "recipe") -> ToolPool:
    """The built-in library, or a user's file; optionally only some categories."""
    if file is None:
        source = "tool_library.json"
        data = json.loads(files(__package__).joinpath(source).read_text(encoding="utf-8"))
    else:
        source = Path(file).name
        data = _read(Path(file))
    mapped = [0]
    pool = ToolPool(_groups(data, source, mapped), mapped[0])
    if categories is not None:
        unknown = sorted(set(categories) - set(pool.groups))
        if unknown:
            raise UserError(f"{place}: tools.categories", f"unknown category {unknown[0]!r} (known: {', '.join(sorted(pool.groups))})")
        pool = ToolPool({c: pool.groups[c] for c in categories}, pool.type_names_mapped)
    return pool


def _read(path: Path) -> Any:
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(path.name, f"line {err.lineno}: invalid JSON: {err.msg}") from None
    except yaml.YAMLError as err:
        raise UserError(path.name, f"invalid YAML: {getattr(err, 'problem', err)}") from None


def _groups(data: Any, source: str, mapped: list[int]) -> dict[str, dict[str, tuple[dict[str, Any], ...]]]:
    """category -> toolset -> checked schemas; mapped[0] counts the type names mapped."""
    if isinstance(data, list):  # a flat list: one category, one toolset
        data = {DEFAULT_GROUP: {DEFAULT_GROUP: data}}
    if not isinstance(data, dict) or not data:
        raise UserError(source, "must be a list of tool schemas or a mapping category -> toolset -> list")
    groups, seen = {}, {}
    for category, toolsets in data.items():
        if not isinstance(toolsets, dict) or not toolsets:
            raise UserError(f"{source}: {category}", "must be a mapping toolset -> list of tool schemas")
        groups[category] = {}
        for toolset, tools in toolsets.items():
            where = f"{source}: {category}.{toolset}"
            if not isinstance(tools, list) or not tools:
                raise UserError(where, "must be a non-empty list of tool schemas")
            normalized = []
            for i, tool in enumerate(tools):
                schema, n = normalize_tool(tool, f"{where}[{i}]")
                mapped[0] += n
                name = schema["function"]["name"]
                if name in seen:
                    raise UserError(f"{where}[{i}]", f"tool name {name!r} already used at {seen[name]}")
                seen[name] = f"{category}.{toolset}[{i}]"
                normalized.append(schema)
            groups[category][toolset] = tuple(normalized)
    return groups


def normalize_tool(tool: Any, place: str) -> tuple[dict[str, Any], int]:
    """Accept ``{"type": "function", "function": {...}}`` or the bare function object, with
    Python-flavoured type names (schema_types.py); check it. Returns the schema and how many
    type names were mapped."""
    if not isinstance(tool, dict):
        raise UserError(place, f"must be a tool schema object, got {type(tool).__name__}")
    fn = tool.get("function", tool) if tool.get("type", "function") == "function" else None
    if not isinstance(fn, dict):
        raise UserError(place, 'must be {"type": "function", "function": {...}} or a function object')
    name = fn.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise UserError(f"{place}.name", f"must be a function name (letters, digits, _ . -), got {name!r}")
    description = fn.get("description", "")
    if not isinstance(description, str):
        raise UserError(f"{place}.description", "must be a string")
    params, mapped = to_json_schema(fn.get("parameters", {"type": "object", "properties": {}}))
    if not isinstance(params, dict) or params.get("type", "object") != "object":
        raise UserError(f"{place}.parameters", 'must be a JSON schema with "type": "object"')
    try:
        Draft202012Validator.check_schema(params)
    except SchemaError as err:
        path = ".".join(str(p) for p in err.path)
        raise UserError(f"{place}.parameters{'.' + path if path else ''}", f"invalid JSON schema: {err.message}") from None
    required = params.get("required", [])
    missing = [r for r in required if r not in params.get("properties", {})]
    if missing:
        raise UserError(f"{place}.parameters.required", f"names {missing[0]!r}, which is not a property")
    return {"type": "function", "function": {"name": name, "description": description, "parameters": params}}, mapped
