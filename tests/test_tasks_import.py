"""`tasks import`: BFCL questions (bfcl-eval's data) and the reference pool format's queries
become a tasks file and a tool file that a recipe reads back as they were meant."""

from __future__ import annotations

import json
from pathlib import Path

from trustee_lite.__main__ import main
from trustee_lite.env.pool.tools import build_pool, file_entries, load_pool
from trustee_lite.env.task_file import read_tasks, resolve

ROOT = Path(__file__).resolve().parents[1]
QUERIES = ROOT / "tests" / "tool_sources" / "queries.json"


def imported(args: list[str], capsys) -> dict:
    assert main(["tasks", "import", *args]) == 0
    out, err = capsys.readouterr()
    assert err.startswith("wrote ") and "; in a recipe: tasks: {file: " in err
    return json.loads(out)


def test_bfcl_questions_become_tasks_with_checked_arguments(tmp_path, capsys):
    result = imported(["bfcl", "simple_python", "--limit", "3", "--out", str(tmp_path / "bfcl.jsonl")], capsys)
    assert result["tasks"] == 3 and result["tools"] == 3 and result["checked_arguments"] == 3
    tasks = resolve(read_tasks(result["out"], need_tools=True), load_pool(result["tools_file"]))
    assert tasks[0].query.startswith("Find the area of a triangle with a base of 10")
    assert tasks[0].expected_calls[0].name == "calculate_triangle_area"
    assert tasks[0].expected_calls[0].arguments == {"base": 10, "height": 5}  # 'unit' has two accepted values: left out
    result = imported(["bfcl", "parallel", "--limit", "2", "--out", str(tmp_path / "p.jsonl")], capsys)
    parallel = read_tasks(result["out"], need_tools=True)
    assert all(len(t.expected_calls) >= 2 for t in parallel)


def test_pool_queries_become_tasks_and_a_tool_file(tmp_path, capsys):
    result = imported(["pool", str(QUERIES), "--out", str(tmp_path / "q.jsonl"), "--tools", str(tmp_path / "t.json")], capsys)
    assert result["tasks"] == 4 and result["tools"] == 4
    rows = [json.loads(line) for line in Path(result["out"]).read_text().splitlines()]
    assert rows[0]["id"] == "17" and rows[0]["tools"] == ["weekly_trending_for_Film_Charts", "song_lyrics_for_Lyrics"]
    assert rows[0]["expected_calls"] == rows[0]["tools"]  # "relevant APIs"
    assert rows[1]["tools"] == ["convert"] and rows[2]["tools"] == ["convert_2"]  # same name, another schema
    assert rows[3]["tools"] == ["get_current_weather"]  # a name of an existing pool's tool, kept as is
    written = json.loads(Path(result["tools_file"]).read_text())
    assert set(written) == {"Movies", "Music", "finance", "imported"}
    lyrics = written["Music"]["Lyrics"][0]["function"]["parameters"]
    assert lyrics["required"] == ["title"] and lyrics["properties"]["limit"]["type"] == "number"
    pool = build_pool(file_entries(result["tools_file"]) + file_entries(None))  # the import beside the built-in pool
    assert [t.tools for t in resolve(read_tasks(result["out"], need_tools=True), pool)][:3] == [
        tuple(rows[0]["tools"]), ("convert",), ("convert_2",)]


def test_import_mistakes_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text('[{"query": "hi", "api_list": [{"name": ""}]}]')
    for args, expected in ((["pool", str(bad), "--out", str(tmp_path / "x.jsonl")], "bad.json: [0].api_list[0].name: must be a function name"),
                           (["pool", str(tmp_path / "none.json"), "--out", str(tmp_path / "x.jsonl")], "none.json: file not found"),
                           (["bfcl", "multi_turn_base", "--out", str(tmp_path / "x.jsonl")], "tasks import bfcl: 'multi_turn_base': only single-turn"),
                           (["bfcl", "simple_python", "--out", str(tmp_path / "x.csv")], "--out: the tasks file is written as JSONL")):
        assert main(["tasks", "import", *args]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
