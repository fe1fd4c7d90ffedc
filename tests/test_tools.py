"""The tool pool: the built-in library's size, sampling, and loading a user's file."""

from __future__ import annotations

import json
import random

import pytest

from trustee_lite.env.pool.tools import load_pool
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
    ('[]', "t.json: default.default: must be a non-empty list of tool schemas"),
    ('[{"name": "  "}]', "t.json: default.default[0].name: must be a function name, got '  '"),
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



def _fn(name, description="", **properties):
    return {"type": "function", "function": {"name": name, "description": description,
                                             "parameters": {"type": "object", "properties": properties}}}


def reference_pool() -> dict:
    """The reference implementation's pool form (ToolBench tools): category -> toolset -> OpenAI
    functions plus toolset_name, toolset_description and category; names with spaces and
    slashes, a name repeated across toolsets, numeric parameters with string defaults."""
    def entry(category, toolset, described, fn):
        return {**fn, "toolset_name": toolset, "toolset_description": described, "category": category}

    seo = "Keyword research for search engine optimisation."
    return {
        "Data": {"Keyword Tool": [
            entry("Data", "Keyword Tool", seo, _fn("Keyword Ideas", "Ideas for a seed keyword.",
                                                    keyword={"type": "string"}, limit={"type": "number", "default": "1000"})),
            entry("Data", "Keyword Tool", seo, _fn("search", "Search volume of a keyword.", keyword={"type": "string"})),
        ]},
        "Communication": {
            "Slack": [entry("Communication", "Slack", "Team chat.", _fn("messages/send", "Post a message.", text={"type": "str"}))],
            "Twilio": [entry("Communication", "Twilio", "", _fn("SEND SMS", "Send a text message.", to={"type": "string"})),
                       entry("Communication", "Twilio", "", _fn("search", "Find a sent message."))],
        },
    }


def test_reference_pool_format_loads_with_safe_names(tmp_path):
    (tmp_path / "toolbench.json").write_text(json.dumps(reference_pool()))
    pool = load_pool(str(tmp_path / "toolbench.json"))
    assert {c: sorted(t) for c, t in pool.groups.items()} == {"Data": ["Keyword Tool"], "Communication": ["Slack", "Twilio"]}
    assert sorted(pool.tools) == ["Keyword_Ideas", "SEND_SMS", "messages_send", "search", "search_2"]
    assert pool.original_names == {"Keyword_Ideas": "Keyword Ideas", "messages_send": "messages/send",
                                   "SEND_SMS": "SEND SMS", "search_2": "search"}
    assert pool.original("search_2") == "search" and pool.original("search") == "search"
    assert pool.normalised() == ("3 tool names made safe (e.g. 'Keyword Ideas' -> Keyword_Ideas), "
                                 "1 repeated tool name given a suffix, 1 type name (float, dict, any, ...) read as JSON Schema types")
    limit = pool.tools["Keyword_Ideas"]["function"]["parameters"]["properties"]["limit"]
    assert limit == {"type": "number", "default": "1000"}  # the string default stays as given
    assert set(pool.tools["search"]["function"]) == {"name", "description", "parameters"}  # the extra keys stay out
    # the toolset descriptions go to the task generator, for the toolsets the drawn tools come from
    assert pool.services("Data", [pool.tools["search"]]) == "- Keyword Tool: Keyword research for search engine optimisation."
    assert pool.services("Communication", [pool.tools["search_2"]]) == ""  # Twilio has none
    # the export form reads back to the same pool, under the sources' names
    (tmp_path / "again.json").write_text(json.dumps(pool.as_file()))
    again = load_pool(str(tmp_path / "again.json"))
    assert again.groups == pool.groups and again.original_names == pool.original_names
    assert again.descriptions == pool.descriptions


def test_safe_names():
    from trustee_lite.env.pool.tools import safe_name

    assert safe_name("Keyword Ideas") == "Keyword_Ideas"
    assert safe_name("/v1/messages/{id}") == "v1_messages_id"
    assert safe_name("3d render") == "_3d_render"
    assert safe_name("天气") == "tool"
    assert len(safe_name("x" * 100)) == 64


def test_toolset_descriptions_reach_the_task_generator(tmp_path):
    from trustee_lite.config import KnobTable
    from trustee_lite.env import task_generator
    from trustee_lite.env.knobs import knobs_at

    (tmp_path / "toolbench.json").write_text(json.dumps(reference_pool()))
    pool = load_pool(str(tmp_path / "toolbench.json"))
    tools = (pool.tools["Keyword_Ideas"],)
    knobs = knobs_at(1, KnobTable())
    described = task_generator.request(0, "Data", tools, knobs, pool.services("Data", tools)).messages[0]["content"]
    plain = task_generator.request(0, "Data", tools, knobs).messages[0]["content"]
    assert ('"name":"Keyword_Ideas"' in described and "The tools belong to these services:\n"
            "- Keyword Tool: Keyword research for search engine optimisation.\n" in described)
    assert "services" not in plain and plain == described.replace(
        "\n\nThe tools belong to these services:\n- Keyword Tool: Keyword research for search engine optimisation.", "")


def test_the_report_shows_the_sources_names(tmp_path):
    from trustee_lite.records import KnobValues, TaskDraft
    from trustee_lite.report.data import episodes, runs
    from trustee_lite.store import Store

    with Store(tmp_path / "db.sqlite") as store:
        run_id = store.start_run("simulate", "t", 0, {})
        store.set_tool_names(run_id, {"Keyword_Ideas": "Keyword Ideas"})
        knobs = KnobValues(**{k: 1 for k in KnobValues.__dataclass_fields__})
        store.add_draft(run_id, TaskDraft(index=0, level=1, category="Data", knobs=knobs,
                                          tool_names=("Keyword_Ideas", "search"), failure="x"))
        [task] = episodes(store, runs(store)[0], None)
    assert task["tools"] == ["Keyword Ideas", "search"]
