"""The tool pool: the built-in library's size, sampling, and loading a user's file."""

from __future__ import annotations

import json
import random

import pytest

from trustee_lite.env.tools import load_pool
from trustee_lite.errors import UserError


def test_builtin_library_has_60_tools_in_8_categories():
    pool = load_pool()
    assert len(pool.groups) >= 8
    assert len(pool.tools) >= 60
    for category, toolsets in pool.groups.items():
        assert sum(len(t) for t in toolsets.values()) >= 10, category  # num_tools reaches 10 at level 100


def test_sample_draws_the_requested_count_from_one_category():
    pool = load_pool()
    rng = random.Random(0)
    for n in (1, 3, 10):
        for _ in range(20):
            category, tools = pool.sample(n, rng)
            names = {t["function"]["name"] for t in tools}
            in_category = {t["function"]["name"] for ts in pool.groups[category].values() for t in ts}
            assert len(tools) == n and len(names) == n and names <= in_category


def test_sample_prefers_whole_toolsets():
    pool = load_pool()
    rng = random.Random(1)
    for _ in range(50):
        category, tools = pool.sample(2, rng)
        toolsets = {name for name, ts in pool.groups[category].items() for t in ts if t in tools}
        # A pool of 2 is filled from the first toolset when it holds at least 2 tools.
        assert len(toolsets) == 1 or any(len(ts) < 2 for ts in pool.groups[category].values())


def test_sample_is_deterministic_for_a_seed():
    pool = load_pool()
    assert pool.sample(4, random.Random(5)) == pool.sample(4, random.Random(5))


def test_user_file_as_a_flat_list(tmp_path):
    tools = [{"name": "ping", "description": "Ping a host.", "parameters": {"type": "object", "properties": {
        "host": {"type": "string"}}, "required": ["host"]}},
        {"type": "function", "function": {"name": "pong", "parameters": {"type": "object", "properties": {}}}}]
    (tmp_path / "t.json").write_text(json.dumps(tools))
    pool = load_pool(str(tmp_path / "t.json"))
    assert set(pool.tools) == {"ping", "pong"}
    assert pool.tools["ping"]["type"] == "function" and pool.tools["ping"]["function"]["name"] == "ping"
    category, sampled = pool.sample(5, random.Random(0))
    assert category == "default" and len(sampled) == 2  # a small category gives all it has


def test_user_file_in_grouped_yaml_form(tmp_path):
    (tmp_path / "t.yaml").write_text(
        "net:\n  diag:\n    - name: ping\n      parameters: {type: object, properties: {host: {type: string}}}\n"
    )
    assert set(load_pool(str(tmp_path / "t.yaml")).groups) == {"net"}


@pytest.mark.parametrize("content, message", [
    ('[{"description": "no name"}]', "t.json: default.default[0].name: must be a function name"),
    ('[{"name": "a"}, {"name": "a"}]', "t.json: default.default[1]: tool name 'a' already used"),
    ('[{"name": "a", "parameters": {"type": "array"}}]', 't.json: default.default[0].parameters: must be a JSON schema with "type": "object"'),
    ('[{"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "strng"}}}}]',
     "t.json: default.default[0].parameters.properties.x.type: invalid JSON schema"),
    ('[{"name": "a", "parameters": {"type": "object", "properties": {}, "required": ["x"]}}]',
     "t.json: default.default[0].parameters.required: names 'x', which is not a property"),
    ('{"cat": []}', "t.json: cat: must be a mapping toolset -> list of tool schemas"),
    ('"tools"', "t.json: must be a list of tool schemas or a mapping"),
])
def test_bad_tool_files_name_the_place(tmp_path, content, message):
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(UserError) as err:
        load_pool(str(tmp_path / "t.json"))
    assert str(err.value).startswith(message), str(err.value)


def test_category_filter():
    pool = load_pool(categories=["travel", "weather"])
    assert set(pool.groups) == {"travel", "weather"}


def test_python_flavoured_types_load_as_json_schema(tmp_path):
    """A benchmark-style doc (BFCL writes "dict", "float", "tuple", "any") loads; each name maps by
    the one table; string defaults stay as given; the pool says how many names it mapped."""
    doc = {"name": "area", "description": "Area of a shape.", "parameters": {"type": "dict", "properties": {
        "base": {"type": "float", "description": "Base.", "default": "1.0"},
        "sides": {"type": "int"}, "closed": {"type": "bool"}, "label": {"type": "str"},
        "corners": {"type": "list", "items": {"type": "tuple", "items": {"type": "float"}}},
        "meta": {"type": "dict", "additionalProperties": {"type": "any"}},
        "unit": {"type": ["str", "null"]}}, "required": ["base"]}}
    (tmp_path / "t.json").write_text(json.dumps([doc]))
    pool = load_pool(str(tmp_path / "t.json"))
    params = pool.tools["area"]["function"]["parameters"]
    props = params["properties"]
    assert params["type"] == "object"
    assert [props[k]["type"] for k in ("base", "sides", "closed", "label", "corners")] == [
        "number", "integer", "boolean", "string", "array"]
    assert props["corners"]["items"] == {"type": "array", "items": {"type": "number"}}
    assert props["meta"] == {"type": "object", "additionalProperties": {}}  # any: no type constraint
    assert props["unit"]["type"] == ["string", "null"]
    assert props["base"]["default"] == "1.0" and props["base"]["description"] == "Base."
    assert pool.type_names_mapped == 11
    assert pool.normalised() == "11 type names (float, dict, any, ...) read as JSON Schema types"
    assert load_pool().normalised() is None  # the built-in library is standard JSON Schema

