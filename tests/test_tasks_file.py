"""The user's own tasks: the file formats, one line per malformed file, the three modes' draws
(seeded and replayable), the held-out split, and the code check of expected arguments."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from trustee_lite.config import parse_recipe
from trustee_lite.env.pool.tools import load_pool
from trustee_lite.env.task_file import FileTask, read_tasks, resolve
from trustee_lite.env.task_source import TaskSet, split
from trustee_lite.env.verifier import missed_call, same_value
from trustee_lite.errors import UserError
from trustee_lite.records import ExpectedCall, KnobValues, Task, ToolCall, Turn

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "recipes" / "tasks" / "single-call.jsonl"
ROWS = [
    {"id": "a", "query": "Weather in Paris?", "tools": ["get_current_weather"],
     "expected_calls": [{"name": "get_current_weather", "arguments": {"location": "Paris"}}]},
    {"id": "b", "query": "Quote for AAPL", "tools": ["get_stock_quote", "get_stock_price_history"], "level": 5},
    {"id": "c", "query": "My accounts, please", "tools": ["list_bank_accounts"], "intent": "See every account.",
     "persona": "Terse.", "expected_calls": ["list_bank_accounts"]},
]


def write_forms(folder: Path) -> dict[str, Path]:
    """The same three tasks as JSONL, JSON, YAML and CSV."""
    import csv

    import yaml

    paths = {form: folder / f"tasks.{form}" for form in ("jsonl", "json", "yaml", "csv")}
    paths["jsonl"].write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    paths["json"].write_text(json.dumps(ROWS, indent=2))
    paths["yaml"].write_text(yaml.safe_dump({"tasks": ROWS}))
    with paths["csv"].open("w", newline="") as f:
        writer = csv.DictWriter(f, ["id", "query", "tools", "intent", "persona", "expected_calls", "level"])
        writer.writeheader()
        for r in ROWS:
            writer.writerow({**r, "tools": ";".join(r["tools"]), "expected_calls": json.dumps(r.get("expected_calls", []))
                             if r.get("expected_calls") else ""})
    return paths


def test_every_format_reads_the_same_tasks(tmp_path):
    forms = {form: read_tasks(path, need_tools=True) for form, path in write_forms(tmp_path).items()}
    strip = [[(t.id, t.query, t.tools, t.intent, t.expected_calls, t.persona, t.level) for t in tasks] for tasks in forms.values()]
    assert all(s == strip[0] for s in strip), strip
    tasks = forms["jsonl"]
    assert tasks[0].expected_calls == (ExpectedCall("get_current_weather", {"location": "Paris"}),)
    assert [t.complete for t in tasks] == [False, False, True] and tasks[1].level == 5
    assert [t.place for t in tasks] == ["tasks.jsonl:1", "tasks.jsonl:2", "tasks.jsonl:3"]
    assert [t.place.split(":")[1] for t in forms["csv"]] == ["2", "3", "4"]


BAD = [  # (file name, text, the line's place, words in the message)
    ("t.jsonl", '{"query": "hi", "tools": ["x"]}\n{"query": "hi" "tools": []}\n', "t.jsonl:2", "not JSON"),
    ("t.jsonl", '{"query": "hi", "tools": ["x"]}\n\n{"tools": ["x"]}\n', "t.jsonl:3", "query: the user's first message is required"),
    ("t.jsonl", '{"query": "hi"}\n', "t.jsonl:1", "tools: required in modes replace and mix"),
    ("t.jsonl", '{"query": "hi", "tools": "x"}\n', "t.jsonl:1", "tools: must be a list"),
    ("t.jsonl", '{"query": "hi", "tools": ["x"], "levle": 3}\n', "t.jsonl:1", "unknown field 'levle'"),
    ("t.jsonl", '{"query": "hi", "tools": ["x"], "level": 0}\n', "t.jsonl:1", "level: must be a whole number from 1 to 100"),
    ("t.jsonl", '{"query": "hi", "tools": ["x"], "id": 1}\n{"query": "yo", "tools": ["x"], "id": 1}\n', "t.jsonl:2", "repeats the task at line 1"),
    ("t.jsonl", '{"query": "hi", "tools": ["x"], "expected_calls": [{"name": "x", "arguments": 3}]}\n', "t.jsonl:1", "arguments: must be an object"),
    ("t.jsonl", '[1, 2]\n', "t.jsonl:1", "must be an object"),
    ("t.json", '[\n  {"query": "a", "tools": ["x"]},\n\n  {"query": "", "tools": ["x"]}\n]', "t.json:4", "query"),
    ("t.json", '{"query": "a"}', "t.json", "must be a list of tasks"),
    ("t.yaml", "- query: a\n  tools: [x]\n- query: b\n  tools: [x]\n  persona: 5\n", "t.yaml:3", "persona: must be a non-empty string"),
    ("t.yaml", "- query: a\n  tools: [x\n", "t.yaml:", "not YAML"),
    ("t.csv", "query,tools\nhello,x\n,x\n", "t.csv:3", "query"),
    ("t.csv", "query,tools\nhello,x,extra\n", "t.csv:2", "more cells than the header"),
    ("t.txt", "query\n", "t.txt", "must end in .jsonl"),
    ("t.jsonl", "\n\n", "t.jsonl", "holds no tasks"),
]


@pytest.mark.parametrize("name, text, place, words", BAD)
def test_a_malformed_tasks_file_is_one_line_naming_the_line(tmp_path, name, text, place, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(UserError) as caught:
        read_tasks(path, need_tools=True)
    message = str(caught.value)
    assert message.startswith(place) and words in message and "\n" not in message, message


def test_tool_names_are_resolved_in_the_pool_or_refused(tmp_path):
    pool = load_pool()
    tasks = resolve(read_tasks(write_forms(tmp_path)["jsonl"], need_tools=True), pool)
    assert tasks[1].tools == ("get_stock_quote", "get_stock_price_history")
    path = tmp_path / "bad.jsonl"
    path.write_text('{"query": "hi", "tools": ["get_stock_quote"]}\n{"query": "hi", "tools": ["teleport"]}\n')
    with pytest.raises(UserError, match=r"^bad.jsonl:2: tools: 'teleport' is not in the recipe's tool pool"):
        resolve(read_tasks(path, need_tools=True), pool)
    path.write_text('{"query": "hi", "tools": ["get_stock_quote"], "expected_calls": ["get_current_weather"]}\n')
    with pytest.raises(UserError, match=r"^bad.jsonl:1: expected_calls: 'get_current_weather' is not one of the task's tools"):
        resolve(read_tasks(path, need_tools=True), pool)
    shipped = resolve(read_tasks(SHIPPED, need_tools=True), pool)  # the CPU recipe's file is valid
    assert len(shipped) == 30 and all(t.complete and len(t.expected_calls) == 1 for t in shipped)


def tasks(n: int, levels=None) -> tuple[FileTask, ...]:
    return tuple(FileTask(str(i), f"t:{i}", f"query {i}", (f"tool{i % 4}", "shared"), level=(levels or {}).get(i))
                 for i in range(n))


def test_replace_plays_every_task_once_per_pass_in_a_seeded_order():
    ts = TaskSet("t", "replace", tasks(10), ())
    first = [ts.pick(i, 1, seed=7).id for i in range(30)]
    assert all(sorted(first[k:k + 10]) == sorted(str(i) for i in range(10)) for k in (0, 10, 20))
    assert first[:10] != first[10:20]  # each pass reshuffled
    assert first == [ts.pick(i, 1, seed=7).id for i in range(30)]  # replayable
    assert first != [ts.pick(i, 1, seed=8).id for i in range(30)]


def test_levels_gate_file_tasks():
    ts = TaskSet("t", "replace", tasks(6, {0: 10, 1: 10, 2: 20, 3: 20, 4: 30, 5: 30}), ())
    assert {ts.pick(i, 25, 0).id for i in range(40)} == {"0", "1", "2", "3"}
    assert {ts.pick(i, 3, 0).id for i in range(40)} == {"0", "1"}  # none allowed: the lowest-level ones
    mixed = TaskSet("t", "mix", ts.train, (), from_file=1.0)
    assert all(mixed.pick(i, 3, 0) is None for i in range(40))  # mix generates instead


def test_mix_takes_its_share_from_the_file():
    ts = TaskSet("t", "mix", tasks(10), (), from_file=0.3)
    picks = [ts.pick(i, 1, seed=3) for i in range(1000)]
    share = sum(p is not None for p in picks) / len(picks)
    assert 0.25 < share < 0.35, share
    assert [p and p.id for p in picks] == [p and p.id for p in (ts.pick(i, 1, seed=3) for i in range(1000))]
    assert len(Counter(p.id for p in picks if p is not None)) == 10


def test_examples_mode_shows_tasks_sharing_the_drawn_tools():
    ts = TaskSet("t", "examples", tasks(12), (), examples=3)
    assert ts.pick(0, 1, 0) is None
    shown = ts.shown(("tool1", "shared"), index=5, seed=0)
    assert len(shown) == 3 and all("tool1" in t.tools for t in shown)
    assert shown == ts.shown(("tool1", "shared"), index=5, seed=0)


def test_held_out_tasks_are_never_drawn_for_training():
    all_tasks = tasks(20)
    train, held = split(list(all_tasks), 0.2, seed=11)
    assert len(held) == 4 and len(train) == 16 and not set(train) & set(held)
    assert (train, held) == split(list(all_tasks), 0.2, seed=11) and held != split(list(all_tasks), 0.2, seed=12)[1]
    for mode in ("replace", "mix"):
        ts = TaskSet("t", mode, train, held, from_file=0.5)
        drawn = {ts.pick(i, level, 0) for i in range(300) for level in (1, 50)} - {None}
        assert drawn and not drawn & set(held)
    assert split(list(tasks(3)), 0.9, 0)[0]  # at least one task stays for training


def test_recipe_tasks_section(tmp_path):
    (tmp_path / "t.jsonl").write_text(json.dumps(ROWS[0]) + "\n")
    recipe = parse_recipe({"tasks": {"file": "t.jsonl", "mode": "mix", "from_file": 0.25, "holdout": 0.1}}, "r.yaml", tmp_path)
    assert recipe.tasks.file == str(tmp_path / "t.jsonl") and recipe.tasks.mode == "mix"
    for section, words in (({"file": "none.jsonl"}, "tasks.file: file not found"),
                           ({"file": "t.jsonl", "mode": "swap"}, "tasks.mode"),
                           ({"file": "t.jsonl", "holdout": 1.0}, "tasks.holdout")):
        with pytest.raises(UserError, match=words):
            parse_recipe({"tasks": section}, "r.yaml", tmp_path)


def _task(checks) -> Task:
    knobs = KnobValues(1, 1, 0, 0, 0, 1, 0, 1, 2, 1)
    return Task(0, "weather", (), knobs, "intent", ("get_current_weather",), "persona", "query", "f#1", checks)


def _turns(*calls) -> tuple[Turn, ...]:
    return (Turn("assistant", "", calls=tuple(calls)),)


def test_expected_arguments_are_checked_by_code():
    task = _task((ExpectedCall("get_current_weather", {"location": "Paris", "days": 3}),))
    right = ToolCall("get_current_weather", {"location": " paris ", "days": 3.0, "units": "celsius"})
    assert missed_call(task, _turns(right)) is None
    for wrong in (ToolCall("get_current_weather", {"location": "Lyon", "days": 3}),
                  ToolCall("get_current_weather", {"location": "Paris"}),
                  ToolCall("get_daily_forecast", {"location": "Paris", "days": 3}),
                  ToolCall("get_current_weather", {"location": "Paris", "days": 3}, error="bad json")):
        verdict = missed_call(task, _turns(wrong))
        assert verdict.reward == -1 and 'get_current_weather(location="Paris", days=3)' in verdict.reasoning
    assert missed_call(_task(()), _turns()) is None  # names only: the verifier judges
    assert same_value([1, "A"], [1.0, "a"]) and not same_value(True, 1) and not same_value({"a": 1}, {"a": 1, "b": 2})


def test_a_bad_tasks_file_stops_a_command_before_any_model_loads(tmp_path, capsys):
    from trustee_lite.__main__ import main

    recipe = tmp_path / "r.yaml"
    recipe.write_text("tasks: {file: t.jsonl}\n")
    for text, expected in (('{"query": "hi", "tools": ["get_stock_quote"]}\n{"query": 3}\n', "t.jsonl:2: query"),
                           ('{"query": "hi", "tools": ["teleport"]}\n', "t.jsonl:1: tools: 'teleport' is not in")):
        (tmp_path / "t.jsonl").write_text(text)
        for command in ("simulate", "train"):
            assert main([command, str(recipe), "--db", str(tmp_path / "db.sqlite"), *(["--out", str(tmp_path / "o")] * (command == "train"))]) == 2
            err = capsys.readouterr().err
            assert err.startswith(expected) and err.count("\n") == 1, err  # no 'loading ...' line before it
