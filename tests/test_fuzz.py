"""The front door, fuzzed (Hypothesis): random and mutated recipes, tool files (flat and grouped
lists, JSON and YAML), OpenAPI specs and tasks files (JSONL, JSON, YAML, CSV) go to the loaders; each one gives a valid result or a
UserError whose every line is one line, never another exception. 500 examples each."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trustee_lite.config import load_recipe, parse_recipe
from trustee_lite.env.pool.openapi import openapi_entries
from trustee_lite.env.pool.tools import build_pool, load_pool
from trustee_lite.env.task_file import read_tasks, resolve
from trustee_lite.errors import UserError, UserErrors

ROOT = Path(__file__).resolve().parents[1]
SMOKE_TEXT = (ROOT / "recipes" / "smoke.yaml").read_text()
SMOKE = yaml.safe_load(SMOKE_TEXT)
LIBRARY = json.loads((ROOT / "trustee_lite" / "env" / "pool" / "tool_library.json").read_text())
SOME_TOOLS = {c: dict(list(sets.items())[:2]) for c, sets in list(LIBRARY.items())[:3]}  # grouped form
FLAT_TOOLS = [t for sets in SOME_TOOLS.values() for tools in sets.values() for t in tools]
OPENAPI = yaml.safe_load((ROOT / "tests" / "tool_sources" / "shop.openapi.yaml").read_text())
TASKS = [json.loads(line) for line in (ROOT / "recipes" / "tasks" / "single-call.jsonl").read_text().splitlines()[:4]]
POOL = load_pool()
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck))
WORK = Path(tempfile.mkdtemp(prefix="trustee-fuzz-"))

scalars = (st.none() | st.booleans() | st.integers(-(10**12), 10**12) | st.floats(allow_nan=True)
           | st.text(max_size=12) | st.sampled_from(["", "0", "-1", "1e-4", "embedded", "object", "string", "$ref"]))
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
    st.text(max_size=8) | st.sampled_from(["type", "properties", "required", "name", "function", "items", "enum"]),
    inner, max_size=4), max_leaves=10)


def mutated(doc, data, edits: int = 3):
    """`doc` with a few random edits at random places: a value replaced, a key removed or added,
    an element dropped."""
    doc = json.loads(json.dumps(doc))
    for _ in range(data.draw(st.integers(1, edits))):
        node = doc
        for _depth in range(data.draw(st.integers(0, 6))):
            children = list(node.items()) if isinstance(node, dict) else list(enumerate(node)) if isinstance(node, list) else []
            containers = [(k, v) for k, v in children if isinstance(v, (dict, list)) and v]
            if not containers:
                break
            node = data.draw(st.sampled_from(containers))[1]
        if isinstance(node, dict) and node:
            key = data.draw(st.sampled_from(sorted(node, key=str)))
            action = data.draw(st.sampled_from(["replace", "remove", "add"]))
            if action == "replace":
                node[key] = data.draw(values)
            elif action == "remove":
                del node[key]
            else:
                node[data.draw(st.text(max_size=8))] = data.draw(values)
        elif isinstance(node, list) and node:
            index = data.draw(st.integers(0, len(node) - 1))
            if data.draw(st.booleans()):
                node[index] = data.draw(values)
            else:
                del node[index]
    return doc


def one_line_or_valid(load) -> None:
    try:
        load()
    except UserErrors as err:
        assert err.lines and all(line.strip() and "\n" not in line for line in err.lines), err.lines
    except UserError as err:
        assert str(err).strip() and "\n" not in str(err), str(err)


def written(name: str, text: str) -> Path:
    path = WORK / name
    path.write_text(text, encoding="utf-8")
    return path


@FUZZ
@given(st.data())
def test_recipes(data):
    doc = data.draw(st.one_of(st.builds(lambda: SMOKE).map(lambda d: d), values))
    doc = mutated(doc, data) if isinstance(doc, dict) else doc
    if isinstance(doc, dict):
        one_line_or_valid(lambda: parse_recipe(doc, "fuzz.yaml", WORK))
    text = data.draw(st.sampled_from([SMOKE_TEXT, yaml.safe_dump(doc) if doc is not None else ""]))
    cut = data.draw(st.integers(0, len(text)))
    noise = data.draw(st.text(max_size=6))
    one_line_or_valid(lambda: load_recipe(written("fuzz.yaml", text[:cut] + noise + text[cut + len(noise):])))


@FUZZ
@given(st.data())
def test_tool_files(data):
    form = data.draw(st.sampled_from(["grouped", "flat", "random"]))
    doc = {"grouped": SOME_TOOLS, "flat": FLAT_TOOLS}.get(form)
    doc = mutated(doc, data, 4) if doc is not None else data.draw(values)
    if data.draw(st.booleans()):
        path = written("fuzz_tools.json", json.dumps(doc))
    else:
        path = written("fuzz_tools.yaml", yaml.safe_dump(doc))
    one_line_or_valid(lambda: load_pool(str(path)))


@FUZZ
@given(st.data())
def test_openapi_specs(data):
    doc = mutated(OPENAPI, data, 4) if data.draw(st.integers(0, 9)) else data.draw(values)
    path = written("fuzz_spec.yaml", yaml.safe_dump(doc))
    one_line_or_valid(lambda: build_pool(openapi_entries(str(path))))


@FUZZ
@given(st.data())
def test_tasks_files(data):
    import csv
    import io

    doc = mutated(TASKS, data, 4) if data.draw(st.integers(0, 9)) else data.draw(values)
    form = data.draw(st.sampled_from(["jsonl", "json", "yaml", "csv"]))
    if form == "jsonl":
        rows = doc if isinstance(doc, list) else [doc]
        text = "\n".join(json.dumps(r) for r in rows)
    elif form == "json":
        text = json.dumps(doc)
    elif form == "yaml":
        text = yaml.safe_dump(doc)
    else:
        out = io.StringIO()
        rows = [r for r in (doc if isinstance(doc, list) else [doc]) if isinstance(r, dict)]
        writer = csv.writer(out)
        keys = sorted({str(k) for r in rows for k in r})
        writer.writerow(keys)
        for r in rows:
            writer.writerow([json.dumps(r.get(k)) if isinstance(r.get(k), (list, dict)) else r.get(k, "") for k in keys])
        text = out.getvalue()
    cut = data.draw(st.integers(0, len(text)))
    noise = data.draw(st.text(max_size=4))
    path = written(f"fuzz_tasks.{form}", text[:cut] + noise + text[cut + len(noise):] if data.draw(st.booleans()) else text)
    one_line_or_valid(lambda: resolve(read_tasks(path, need_tools=data.draw(st.booleans())), POOL))
