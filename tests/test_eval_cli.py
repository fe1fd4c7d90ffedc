"""`eval` and `compare` from the command line: user errors, and one real run of the embedded
policy (base and an adapter) on BFCL items and held-out simulated tasks."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from trustee_lite.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "smoke.yaml")


@pytest.mark.parametrize("args, expected", [
    ([SMOKE], "eval: nothing to evaluate: give --bfcl CATEGORY ..., --simulated N and/or --tasks [FILE]"),
    ([SMOKE, "--tasks"], "--tasks: smoke.yaml holds no tasks out (it needs a tasks section with holdout > 0)"),
    ([SMOKE, "--tasks", "/nonexistent/tasks.jsonl"], "--tasks: file not found: /nonexistent/tasks.jsonl"),
    ([SMOKE, "--bfcl", "simple_java"], "--bfcl: unknown or unsupported BFCL category 'simple_java'"),
    ([SMOKE, "--bfcl", "simple_python", "--adapter", "/nonexistent/adapter"], "--adapter: /nonexistent/adapter: not a PEFT adapter folder"),
    ([SMOKE, "--bfcl", "simple_python", "--policy-backend", "llama_cpp", "--adapter", str(ROOT / "recipes")],
     f"--adapter: {ROOT / 'recipes'}: not a GGUF LoRA (a .gguf file, or the folder export --to gguf-lora wrote)"),
    ([SMOKE, "--bfcl", "simple_python", "--policy-backend", "llama_cpp", "--set", "policy.model=Qwen/Qwen3-0.6B"],
     "smoke.yaml: policy.model: llama_cpp needs a local .gguf file, got 'Qwen/Qwen3-0.6B'"),
    ([SMOKE, "--simulated", "2", "--level", "0"], "--level: must be between 1 and 100, got 0"),
    ([str(ROOT / "missing.yaml"), "--bfcl", "simple_python"], f"{ROOT / 'missing.yaml'}: recipe file not found"),
])
def test_eval_user_errors_are_one_line_exit_2(args, expected, tmp_path, capsys):
    status = main(["eval", *args, "--db", str(tmp_path / "db.sqlite")])
    out, err = capsys.readouterr()
    assert status == 2 and out == ""
    assert err.startswith(expected) and err.count("\n") == 1


def test_a_tasks_file_naming_an_unknown_tool_stops_before_any_model(tmp_path, capsys):
    tasks = tmp_path / "mine.jsonl"
    tasks.write_text('{"query": "Beam me up", "tools": ["teleport"]}\n')
    assert main(["eval", SMOKE, "--tasks", str(tasks), "--db", str(tmp_path / "db.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mine.jsonl:1: tools: 'teleport' is not in the recipe's tool pool") and err.count("\n") == 1


def test_compare_without_results_exit_2(tmp_path, capsys):
    assert main(["compare", "--db", str(tmp_path / "none.sqlite")]) == 2
    assert capsys.readouterr().err.strip().endswith("no such database (run eval first)")


@pytest.fixture(scope="module")
def adapter(tmp_path_factory, smol_backend):
    """A LoRA adapter with non-zero weights (so it changes the policy), saved as training saves it."""
    import copy

    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("run") / "adapter"
    model = get_peft_model(copy.deepcopy(smol_backend.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    model.save_pretrained(str(folder))
    (folder / "state.json").write_text(json.dumps({"step": 3}))
    return folder


def test_base_and_adapter_side_by_side(adapter, tmp_path, capsys):
    db = tmp_path / "db.sqlite"
    tasks = tmp_path / "mine.jsonl"  # one of the CPU recipe's tasks, as a user's own file
    tasks.write_text((ROOT / "recipes" / "tasks" / "single-call.jsonl").read_text().splitlines()[0] + "\n")
    status = main(["eval", SMOKE, "--bfcl", "simple_python", "irrelevance", "--limit", "2", "--max-new-tokens", "24",
                   "--simulated", "1", "--tasks", str(tasks), "--base", "--adapter", str(adapter), "--db", str(db),
                   "--set", "policy.max_new_tokens=16", "--set", "simulator.max_new_tokens=96"])  # episodes kept short
    out, err = capsys.readouterr()
    assert status == 0, err
    result = json.loads(out)
    variants = result["variants"]
    assert [v["adapter"] for v in variants] == [None, str(adapter.resolve())]
    for v in variants:
        by_category = {s["category"]: s for s in v["scores"]}
        assert set(by_category) == {"simple_python", "irrelevance", "level 1", "mine.jsonl"}
        mine = by_category["mine.jsonl"]
        assert mine["benchmark"] == "tasks" and mine["count"] == 1 and 0 <= mine["figures"]["success_rate"] <= 1
        assert by_category["simple_python"]["count"] == 2 and by_category["level 1"]["count"] == 1
        assert 0 <= by_category["simple_python"]["score"] <= 1
        bfcl_errors = sum(by_category["simple_python"]["errors"].values())
        assert bfcl_errors == round(2 * (1 - by_category["simple_python"]["score"]))
        assert 0 <= by_category["level 1"]["abort_rate"] <= 1
    assert variants[1]["scores"][0]["adapter_step"] == 3
    assert "== base" in err and "bfcl category  accuracy" in err and "simulated held-out tasks, level 1" in err
    assert "tasks mine.jsonl: mean verifier reward " in err
    header = [line for line in err.splitlines() if line.startswith("category")]  # the side-by-side view
    assert len(header) == 1 and header[0].split()[1] == "base" and header[0].endswith("/adapter @3")

    con = sqlite3.connect(db)
    runs = [r[0] for r in con.execute("SELECT id FROM runs WHERE kind = 'eval' AND status = 'done' ORDER BY id")]
    assert len(runs) == 2
    assert con.execute("SELECT count(*) FROM eval_items").fetchone()[0] == 2 * 4
    assert con.execute("SELECT count(*) FROM eval_results").fetchone()[0] == 2 * 4
    tasks = [[row for row in con.execute(
        "SELECT task_index, status, first_user_query, origin FROM tasks WHERE run_id = ? ORDER BY id", [run])] for run in runs]
    assert len(tasks[0]) == 2 and tasks[0] == tasks[1]  # held-out and own tasks: the same for every variant
    assert [t[3] for t in tasks[0]] == [None, "mine.jsonl#weather-paris"]

    assert main(["compare", "--db", str(db)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["category", "base"] and lines[0].endswith("/adapter @3")
    assert [line.split()[0] for line in lines[1:]] == ["simple_python", "irrelevance", "simulated", "tasks"]


def test_missing_bfcl_eval_says_how_to_install(tmp_path):
    """Without the bfcl-eval package: one line with the install command, before any model loads."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['bfcl_eval'] = None\n"  # makes `import bfcl_eval` fail
            "from trustee_lite.__main__ import main\n"
            f"sys.exit(main(['eval', {SMOKE!r}, '--bfcl', 'simple_python', '--db', {str(tmp_path / 'db.sqlite')!r}]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "--bfcl: needs the bfcl-eval package (pip install --no-deps bfcl-eval==2026.3.23)\n"
