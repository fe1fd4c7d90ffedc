"""The tool pool: OpenAI-style function schemas grouped category -> toolset -> tools, and sampling.

Every source (a tool file, OpenAPI specs, MCP servers, toolsets the simulator wrote; see
sources.py) gives ToolEntry rows; `build_pool` checks them and makes one pool: type names
read as JSON Schema (schema_types.py), and names a chat template or the call parser cannot
carry (spaces, slashes, a repeat of another tool's name) replaced by safe ones. The policy, the
parser and the simulator see only safe names; the pool keeps the originals for the run record
and the displays.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from trustee_lite.config.loading import read_yaml
from trustee_lite.env.pool.schema_types import to_json_schema
from trustee_lite.errors import UserError
from trustee_lite.progress import counted

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")  # what templates and the call parser carry as is
UNSAFE = re.compile(r"[^A-Za-z0-9_.\-]+")
DEFAULT_GROUP = "default"
ENTRY_KEYS = ("toolset_name", "toolset_description", "category")  # the reference pool's keys beside a function


@dataclass(frozen=True)
class ToolEntry:
    """One tool as a source gives it, before checking: where it goes and where it came from."""

    category: str
    toolset: str
    tool: Any  # {"type": "function", "function": {...}} or the bare function object
    place: str  # for error messages: "file.json: category.toolset[3]"
    toolset_description: str = ""


@dataclass(frozen=True)
class ToolPool:
    groups: dict[str, dict[str, tuple[dict[str, Any], ...]]]  # category -> toolset -> tool schemas
    type_names_mapped: int = 0  # Python- or Java-flavoured type names the loader mapped to JSON Schema
    original_names: dict[str, str] = field(default_factory=dict)  # safe name -> the source's name (renamed only)
    descriptions: dict[str, dict[str, str]] = field(default_factory=dict)  # category -> toolset -> description
    made_safe: int = 0  # names with characters a template or parser cannot carry
    deduplicated: int = 0  # names that repeated an earlier tool's name

    def normalised(self) -> str | None:
        """One line on what loading changed (counts), or None."""
        parts = []
        if self.made_safe:
            safe, original = next((s, o) for s, o in self.original_names.items() if not NAME.match(o))
            parts.append(f"{counted(self.made_safe, 'tool name')} made safe (e.g. {original!r} -> {safe})")
        if self.deduplicated:
            parts.append(f"{counted(self.deduplicated, 'repeated tool name')} given a suffix")
        if self.type_names_mapped:
            parts.append(f"{counted(self.type_names_mapped, 'type name')} (float, dict, any, ...) read as JSON Schema types")
        return ", ".join(parts) or None

    @property
    def tools(self) -> dict[str, dict[str, Any]]:
        """Every tool by (safe) name."""
        return {t["function"]["name"]: t for sets in self.groups.values() for tools in sets.values() for t in tools}

    def category_of(self, name: str) -> str:
        """The category a tool (by safe name) belongs to."""
        return next(c for c, sets in self.groups.items() for tools in sets.values()
                    if any(t["function"]["name"] == name for t in tools))

    def original(self, name: str) -> str:
        """The name a tool had in its source."""
        return self.original_names.get(name, name)

    def services(self, category: str, tools) -> str:
        """The described toolsets the given tools come from, one "- name: description" line each
        (for the task generator); empty when none has a description."""
        names = {t["function"]["name"] for t in tools}
        lines = [f"- {toolset}: {self.descriptions[category][toolset]}"
                 for toolset, members in self.groups[category].items()
                 if self.descriptions.get(category, {}).get(toolset) and names & {t["function"]["name"] for t in members}]
        return "\n".join(lines)

    def only(self, categories: list[str] | None, place: str) -> ToolPool:
        """The pool restricted to some categories (None: all)."""
        if categories is None:
            return self
        unknown = sorted(set(categories) - set(self.groups))
        if unknown:
            raise UserError(f"{place}: tools.categories", f"unknown category {unknown[0]!r} (known: {', '.join(sorted(self.groups))})")
        kept = {c: self.groups[c] for c in categories}
        names = {t["function"]["name"] for sets in kept.values() for tools in sets.values() for t in tools}
        return ToolPool(kept, self.type_names_mapped, {s: o for s, o in self.original_names.items() if s in names},
                        {c: d for c, d in self.descriptions.items() if c in kept}, self.made_safe, self.deduplicated)

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

    def as_file(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
        """The pool as a tool file in the grouped reference form (category -> toolset -> functions
        with toolset_name, toolset_description and category), under the sources' names; load_pool
        reads it back to this pool."""
        out: dict[str, dict[str, list[dict[str, Any]]]] = {}
        for category, toolsets in self.groups.items():
            out[category] = {}
            for toolset, tools in toolsets.items():
                described = self.descriptions.get(category, {}).get(toolset, "")
                out[category][toolset] = [
                    {"type": "function",
                     "function": {**t["function"], "name": self.original(t["function"]["name"])},
                     "toolset_name": toolset, "toolset_description": described, "category": category}
                    for t in tools]
        return out


def load_pool(file: str | None = None, categories: list[str] | None = None, place: str = "recipe") -> ToolPool:
    """The built-in library, or a user's file; optionally only some categories."""
    return build_pool(file_entries(file)).only(categories, place)


def file_entries(file: str | None) -> list[ToolEntry]:
    """The entries of a tool file (None: the built-in library)."""
    if file is None:
        source = "tool_library.json"
        data = json.loads(files(__package__).joinpath(source).read_text(encoding="utf-8"))
    else:
        source = Path(file).name
        data = read_document(Path(file))
    return _entries(data, source)


def read_document(path: Path) -> Any:
    """A JSON or YAML file's content; a syntax error is the user's, with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(str(path), f"cannot read: {err}") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            return read_yaml(text)
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(path.name, f"line {err.lineno}: invalid JSON: {err.msg}") from None
    except yaml.YAMLError as err:
        raise UserError(path.name, f"invalid YAML: {getattr(err, 'problem', err)}") from None


TOOL_FILE_SUFFIXES = (".json", ".yaml", ".yml")


def check_tool_file_name(out: Path) -> None:
    """A tool file to write must be JSON or YAML, in a place that can be written: said before
    any work."""
    if out.suffix not in TOOL_FILE_SUFFIXES:
        raise UserError("--out", f"must end in .json, .yaml or .yml, got {out.name!r}")
    folder = next((p for p in out.absolute().parents if p.exists()), Path("/"))
    if not folder.is_dir() or not os.access(folder, os.W_OK) or (out.exists() and not os.access(out, os.W_OK)):
        raise UserError(f"--out {out}", f"cannot be written ({folder} is not a writable folder)")


def write_document(data: Any, out: Path) -> None:
    """Write a JSON or YAML file (by its suffix), its folder made if need be; whole or not at all
    (a file there before is replaced only once the new one is written)."""
    if out.suffix == ".json":
        import orjson

        content = orjson.dumps(data, option=orjson.OPT_INDENT_2) + b"\n"
    else:
        content = yaml.safe_dump(data, sort_keys=False, allow_unicode=True).encode("utf-8")
    part = out.with_name(out.name + ".part")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(content)
        part.replace(out)
    except OSError as err:
        if part.parent.is_dir():
            part.unlink(missing_ok=True)
        raise UserError(f"--out {out}", f"cannot be written: {err.strerror or err}") from None


def _entries(data: Any, source: str) -> list[ToolEntry]:
    """A flat list (grouped by the entries' own category/toolset_name keys when they have them),
    or a mapping category -> toolset -> list."""
    if isinstance(data, list):
        grouped: dict[str, dict[str, list]] = {}
        for tool in data:
            keys = tool if isinstance(tool, dict) else {}
            category, toolset = str(keys.get("category") or DEFAULT_GROUP), str(keys.get("toolset_name") or DEFAULT_GROUP)
            grouped.setdefault(category, {}).setdefault(toolset, []).append(tool)
        data = grouped or {DEFAULT_GROUP: {DEFAULT_GROUP: []}}
    if not isinstance(data, dict) or not data:
        raise UserError(source, "must be a list of tool schemas or a mapping category -> toolset -> list")
    entries = []
    for category, toolsets in data.items():
        if not isinstance(toolsets, dict) or not toolsets:
            raise UserError(f"{source}: {category}", "must be a mapping toolset -> list of tool schemas")
        for toolset, tools in toolsets.items():
            where = f"{source}: {category}.{toolset}"
            if not isinstance(tools, list) or not tools:
                raise UserError(where, "must be a non-empty list of tool schemas")
            described = next((t["toolset_description"] for t in tools
                              if isinstance(t, dict) and isinstance(t.get("toolset_description"), str)), "")
            entries.extend(ToolEntry(str(category), str(toolset), tool, f"{where}[{i}]", described.strip())
                           for i, tool in enumerate(tools))
    return entries


def build_pool(entries: list[ToolEntry]) -> ToolPool:
    """Check every entry and group them; unsafe or repeated names get safe, unique ones."""
    groups: dict[str, dict[str, list[dict[str, Any]]]] = {}
    descriptions: dict[str, dict[str, str]] = {}
    originals: dict[str, str] = {}
    mapped = made_safe = repeated = 0
    taken: set[str] = set()
    for entry in entries:
        schema, n = normalize_tool(entry.tool, entry.place)
        mapped += n
        fn = schema["function"]
        name = fn["name"] if NAME.match(fn["name"]) else safe_name(fn["name"])
        made_safe += name != fn["name"]
        if name in taken:
            repeated += 1
            name = unique_name(name, taken)
        taken.add(name)
        if name != fn["name"]:
            originals[name] = fn["name"]
            schema = {"type": "function", "function": {**fn, "name": name}}
        groups.setdefault(entry.category, {}).setdefault(entry.toolset, []).append(schema)
        if entry.toolset_description:
            descriptions.setdefault(entry.category, {}).setdefault(entry.toolset, entry.toolset_description)
    frozen = {c: {t: tuple(tools) for t, tools in sets.items()} for c, sets in groups.items()}
    return ToolPool(frozen, mapped, originals, descriptions, made_safe, repeated)


def safe_name(name: str) -> str:
    """A name templates and the call parser carry as is: runs of other characters become one
    underscore; it starts with a letter or an underscore and has at most 64 characters."""
    safe = UNSAFE.sub("_", name.strip()).strip("_") or "tool"
    if not re.match(r"[A-Za-z_]", safe):
        safe = "_" + safe
    return safe[:64]


def unique_name(name: str, taken: set[str]) -> str:
    n = 2
    while f"{name[:60]}_{n}" in taken:
        n += 1
    return f"{name[:60]}_{n}"


def normalize_tool(tool: Any, place: str) -> tuple[dict[str, Any], int]:
    """Accept ``{"type": "function", "function": {...}}`` or the bare function object (other keys
    beside them are ignored), with Python-flavoured type names (schema_types.py); check it.
    Returns the schema and how many type names were mapped. The name is returned as given."""
    if not isinstance(tool, dict):
        raise UserError(place, f"must be a tool schema object, got {type(tool).__name__}")
    fn = tool.get("function", tool) if tool.get("type", "function") == "function" else None
    if not isinstance(fn, dict):
        raise UserError(place, 'must be {"type": "function", "function": {...}} or a function object')
    name = fn.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{place}.name", f"must be a function name, got {name!r}")
    description = fn.get("description") or ""
    if not isinstance(description, str):
        raise UserError(f"{place}.description", "must be a string")
    params, mapped = to_json_schema(fn.get("parameters") or {"type": "object", "properties": {}})
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
