"""Bring your own tools: OpenAPI specs, MCP servers (a stdio server under tests/servers/) and
toolsets the simulator writes, each joining the pool; `tools list` / `tools export`; and the
real `simulate` command running 2 episodes from each source with the embedded models."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path

import pytest
import yaml
from scripted import ScriptedBackend
from test_tools import reference_pool

from trustee_lite.__main__ import main
from trustee_lite.config import SimulatorConfig, SynthesizeConfig, parse_recipe
from trustee_lite.env.pool.openapi import openapi_entries
from trustee_lite.env.pool.sources import preview_pool
from trustee_lite.env.pool.synthesis import synthesize
from trustee_lite.env.pool.tools import build_pool, load_pool
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.errors import UserError
from trustee_lite.lm import GenerationService
from trustee_lite.store import Store

HERE = Path(__file__).parent
SPEC = HERE / "tool_sources" / "shop.openapi.yaml"
MCP_SERVER = HERE / "servers" / "notes_mcp.py"


def test_openapi_spec_converts():
    pool = build_pool(openapi_entries(str(SPEC)))
    assert list(pool.groups) == ["Pet Shop"]  # the spec's title is the category, tags the toolsets
    assert {t: [f["function"]["name"] for f in fs] for t, fs in pool.groups["Pet Shop"].items()} == {
        "pets": ["listPets", "addPet", "get_pets_petId"], "orders": ["placeOrder"]}
    assert pool.descriptions["Pet Shop"] == {"pets": "The shop's animals and their adoption.",
                                             "orders": "Orders of food and toys."}
    assert pool.original("get_pets_petId") == "get /pets/{petId}"  # no operationId: method and path
    fn = {name: t["function"] for name, t in pool.tools.items()}
    # query parameters, one through a $ref to components.parameters and one to a schema; the header is left out
    assert fn["listPets"]["parameters"]["properties"] == {
        "limit": {"type": "integer", "minimum": 1, "exclusiveMaximum": 100},  # OpenAPI 3.0's boolean bound
        "species": {"type": "string", "enum": ["cat", "dog", "bird"]}}
    # a path-level path parameter, required, with its description
    assert fn["get_pets_petId"]["parameters"] == {
        "type": "object", "properties": {"petId": {"type": "integer", "description": "The pet's number."}},
        "required": ["petId"]}
    assert fn["get_pets_petId"]["description"] == "One pet. Its name, species and owner."
    # an object body: its fields become the properties; nullable -> a null type; a property named
    # like an OpenAPI keyword stays; the recursive $ref is cut to an untyped object
    body = fn["addPet"]["parameters"]
    assert body["properties"]["name"] == {"type": ["string", "null"]}
    assert body["properties"]["example"]["type"] == "string"
    assert body["properties"]["parent"] == {"type": "object"}
    assert body["required"] == ["name", "species"]
    # an array body, with a $ref into another (YAML) file, is one `body` property
    assert fn["placeOrder"]["parameters"]["properties"]["body"]["items"]["properties"]["quantity"] == {
        "type": "integer", "default": 1}


@pytest.mark.parametrize("text, message", [
    ("swagger: '2.0'\npaths: {}\n", "bad.yaml: not an OpenAPI 3 document"),
    ("openapi: 3.0.0\ninfo: {title: x}\npaths:\n  /a:\n    get: {parameters: [{$ref: '#/nowhere'}]}\n",
     "bad.yaml: paths./a.get.parameters.0: cannot resolve $ref '#/nowhere'"),
    ("openapi: 3.1.0\ninfo: {title: x}\npaths: {}\n", "bad.yaml: paths: must be a mapping of paths to operations"),
])
def test_bad_openapi_specs_name_the_place(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(UserError) as err:
        openapi_entries(str(tmp_path / "bad.yaml"))
    assert str(err.value).startswith(message), str(err.value)


def _recipe(folder: Path, name: str, tools: dict, **extra) -> Path:
    recipe = {
        "name": name, "seed": 0,
        "policy": {"model": "embedded", "max_new_tokens": 16, "max_response_tokens": 16, "batch_size": 4},
        "simulator": {"backend": "llama_cpp", "model": "embedded", "max_new_tokens": 100, "temperature": 0.7,
                      "n_ctx": 2048, "retries": 1, "max_history_chars": 600},
        "tools": tools, "rollout": {"rollouts_per_task": 2}, "simulate": {"episodes": 2}, **extra,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_mcp_server_tools_join_the_pool(tmp_path, capsys):
    recipe = _recipe(tmp_path, "mcp", {"mcp": [{"command": [sys.executable, str(MCP_SERVER)]}]})
    assert main(["tools", "list", str(recipe), "--names", "--db", str(tmp_path / "db.sqlite")]) == 0
    out = capsys.readouterr().out
    assert "mcp       notes    3      A personal notes service: write, find and tag notes." in out
    assert "notes_search  (source: 'notes/search')" in out and "add_note" in out and "tag_note" in out
    assert "1 category, 1 toolset, 3 tools (1 tool name made safe (e.g. 'notes/search' -> notes_search))" in out


def test_mcp_server_problems_are_one_line(tmp_path, capsys, monkeypatch):
    broken = _recipe(tmp_path, "broken", {"mcp": [{"command": [sys.executable, "-c", "pass"], "timeout_s": 20}]})
    assert main(["tools", "list", str(broken)]) == 2
    assert capsys.readouterr().err.strip().startswith("broken.yaml: tools.mcp[0]: cannot list the server's tools:")
    monkeypatch.setitem(sys.modules, "mcp", None)  # the optional package not installed
    assert main(["tools", "list", str(broken)]) == 2
    assert capsys.readouterr().err.strip() == (
        "broken.yaml: tools.mcp: the mcp package is not installed: pip install 'trustee-lite[mcp]'")


def _toolset(name: str, required: bool = True) -> str:
    tool = {"name": "find_trip", "description": "Find trips to a city.", "parameters": [
        {"name": "city", "type": "string", "description": "Where to.", "required": required},
        {"name": "city", "type": "integer", "description": "A repeat: the first one counts.", "required": False},
        {"name": "season", "type": "string", "description": "When.", "required": False, "enum": ["summer", "winter", "summer"]}]}
    return json.dumps({"toolset_name": name, "toolset_description": "Trips and bookings.", "tools": [tool, tool]})


def test_synthesized_toolsets_are_checked_stored_and_reused(tmp_path):
    """A draft without a required parameter is retried; a repeated tool, parameter or enum value
    counts once; a repeated toolset name gets a suffix; a second run takes the stored toolsets
    without asking the model."""
    answers = [_toolset("trip_planner", required=False), _toolset("trip_planner"), _toolset("trip_planner")]
    cfg = SynthesizeConfig(domains=["travel"], toolsets_per_domain=2)

    async def run(backend):
        async with GenerationService(backend) as service:
            with Store(tmp_path / "db.sqlite") as store:
                return await synthesize(cfg, store, SimulatorClient(service, store, SimulatorConfig(retries=1)), 0)

    writer = ScriptedBackend(lambda request: answers.pop(0))
    entries, results = asyncio.run(run(writer))
    assert [(r.domain, r.reused, r.written, r.drafted) for r in results] == [("travel", 0, 2, 3)]
    assert results[0].line().startswith("travel: 2 toolsets written (2 valid of 3 drafted, ")
    pool = build_pool(entries)
    assert list(pool.groups["travel"]) == ["trip_planner", "trip_planner_2"]
    assert pool.descriptions["travel"]["trip_planner"] == "Trips and bookings."
    assert pool.tools["find_trip"]["function"]["parameters"] == {
        "type": "object", "required": ["city"], "properties": {
            "city": {"type": "string", "description": "Where to."},
            "season": {"type": "string", "description": "When.", "enum": ["summer", "winter"]}}}
    assert pool.original("find_trip_2") == "find_trip"  # the second toolset's tool of the same name

    silent = ScriptedBackend(lambda request: RuntimeError("the model must not be asked"))
    again, results = asyncio.run(run(silent))
    assert silent.batches == [] and [(r.reused, r.written, r.drafted) for r in results] == [(2, 0, 0)]
    assert results[0].line() == "travel: 2 stored toolsets reused"
    assert build_pool(again).groups == pool.groups

    # without a model (check, tools list): the stored toolsets, or a stand-in said so
    recipe = parse_recipe({"name": "s", "tools": {"synthesize": {"domains": ["travel", "cooking"], "toolsets_per_domain": 2}}})
    with Store(tmp_path / "db.sqlite") as store:
        shown, line = preview_pool(recipe, store, stand_in=False)
    assert list(shown.groups) == ["travel"]
    assert line == "1 category, 2 toolsets, 2 tools (1 repeated tool name given a suffix); 1 synthesized domain not written yet"
    stand_in, line = preview_pool(recipe)
    assert len(stand_in.tools) == 110 and line.endswith("2 synthesized domains not written yet (the built-in library stands in)")


def test_simulate_two_episodes_from_each_source(tmp_path, capsys):
    """The real command with the embedded policy and simulator: a tool file in the reference pool
    form, an OpenAPI spec, an MCP server and toolsets the simulator writes for 2 domains; each run
    records its renamed tools; `tools export` then reuses the stored toolsets without a model."""
    (tmp_path / "toolbench.json").write_text(json.dumps(reference_pool()))
    synthesized = {"domains": ["travel", "cooking"], "toolsets_per_domain": 1, "tools_per_toolset": 2,
                   "max_new_tokens": 600}
    sources = {
        "file": {"file": "toolbench.json"},
        "openapi": {"openapi": [str(SPEC)]},
        "mcp": {"mcp": [{"command": [sys.executable, str(MCP_SERVER)]}]},
        "synthesize": {"synthesize": synthesized},
    }
    db = tmp_path / "db.sqlite"
    for name, tools in sources.items():
        assert main(["simulate", str(_recipe(tmp_path, name, tools)), "--db", str(db)]) == 0, name
    captured = capsys.readouterr()
    summaries = [json.loads(line) for line in captured.out.strip().splitlines()]
    assert [s["episodes"] for s in summaries] == [2, 2, 2, 2]
    assert "toolbench.json: 3 tool names made safe" in captured.err
    assert "tools.synthesize: travel: 1 toolset written (1 valid of " in captured.err

    con = sqlite3.connect(db)
    runs = con.execute("SELECT name, tool_names FROM runs ORDER BY id").fetchall()
    assert [name for name, _ in runs] == list(sources)
    names = {name: json.loads(value) if value else {} for name, value in runs}
    assert names["file"]["messages_send"] == "messages/send" and names["mcp"] == {"notes_search": "notes/search"}
    assert names["openapi"] == {"get_pets_petId": "get /pets/{petId}"}
    # every task drew its tools from its run's source
    pools = {"file": {"Data", "Communication"}, "openapi": {"Pet Shop"}, "mcp": {"mcp"}, "synthesize": {"travel", "cooking"}}
    for name, category in con.execute("SELECT r.name, t.category FROM tasks t JOIN runs r ON r.id = t.run_id"):
        assert category in pools[name], (name, category)
    stored = con.execute("SELECT domain, count(*) FROM toolsets GROUP BY domain ORDER BY domain").fetchall()
    assert stored == [("cooking", 1), ("travel", 1)]
    drafts = con.execute("SELECT count(*) FROM cache WHERE role = 'toolset_writer'").fetchone()[0]

    # a later command reuses the stored toolsets: a simulator that cannot be reached is never needed
    recipe = _recipe(tmp_path, "export", {"synthesize": synthesized, "file": "toolbench.json"})
    out = tmp_path / "pool.json"
    assert main(["tools", "export", str(recipe), "--out", str(out), "--db", str(db),
                 "--set", "simulator.backend=openai", "--set", "simulator.base_url=http://127.0.0.1:9/v1",
                 "--set", "simulator.model=none"]) == 0
    assert con.execute("SELECT count(*) FROM cache WHERE role = 'toolset_writer'").fetchone()[0] == drafts
    exported = json.loads(out.read_text())
    assert set(exported) == {"Data", "Communication", "travel", "cooking"}
    assert exported["Communication"]["Slack"][0]["function"]["name"] == "messages/send"  # the source's name
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    again = load_pool(str(out))  # the exported file loads back
    assert len(again.tools) == result["tools"] and set(again.groups["travel"]) == set(json.loads(
        con.execute("SELECT json_group_array(name) FROM toolsets WHERE domain = 'travel'").fetchone()[0]))


@pytest.mark.parametrize("tools, message", [
    ({"mcp": [{"command": "x", "url": "http://a"}]},
     "r.yaml: tools.mcp[0].command: give either command (a stdio server) or url (streamable HTTP), not both"),
    ({"mcp": [{"url": "ftp://a"}]}, "r.yaml: tools.mcp[0].url: must start with http:// or https://, got 'ftp://a'"),
    ({"mcp": [{"command": []}]}, "r.yaml: tools.mcp[0].command: must not be empty"),
    ({"openapi": ["nope.yaml"]}, "r.yaml: tools.openapi[0]: file not found: "),
    ({"synthesize": {"domains": []}}, "r.yaml: tools.synthesize.domains: must list at least 1, got none"),
])
def test_bad_tool_sources_in_a_recipe_are_one_line(tools, message):
    from trustee_lite.errors import UserErrors

    with pytest.raises((UserError, UserErrors)) as err:
        parse_recipe({"name": "x", "tools": tools}, "r.yaml")
    assert str(err.value).startswith(message), str(err.value)
