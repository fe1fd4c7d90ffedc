"""Work whose every episode aborted says why (the reasons with counts, each one's first cause)
and exits 3; a tool too long for any prompt is refused when the pool loads."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from trustee_lite.__main__ import main
from trustee_lite.env.drafting import aborted_without_task
from trustee_lite.metrics import all_aborted
from trustee_lite.records import TaskDraft, Trajectory

ROOT = Path(__file__).resolve().parents[1]


def aborted(reason: str, cause: str) -> Trajectory:
    return Trajectory(task_index=0, rollout_index=0, turns=(), end_reason="aborted", final_reward=None,
                      abort_reason=reason, verifier_reasoning=cause)


def test_the_line_gives_each_reason_its_count_and_first_cause():
    draft = TaskDraft(index=0, level=1, category="travel", knobs=None, tool_names=("a",),
                      failure="task_generator_invalid: prompt of 9,000 tokens + 160 new tokens exceeds the context "
                              "window of 4,096")
    rows = [aborted_without_task(draft, 0), aborted_without_task(draft, 1), aborted("simulator_error", "timeout\nafter 3")]
    assert all_aborted(rows) == ("task_generator_invalid x2: prompt of 9,000 tokens + 160 new tokens exceeds the "
                                 "context window of 4,096; simulator_error x1: timeout after 3")
    played = Trajectory(task_index=1, rollout_index=0, turns=(), end_reason="user_done", final_reward=1.0)
    assert all_aborted(rows + [played]) is None and all_aborted([]) is None


def test_a_command_whose_every_episode_aborted_exits_3(monkeypatch, tmp_path, capsys):
    async def nothing_played(recipe, store, episodes, seed):
        return {"run_id": 1, "episodes": episodes, "aborted": episodes, "all_aborted": "task_generator_invalid x2: why"}

    monkeypatch.setattr("trustee_lite.simulate.simulate", nothing_played)
    assert main(["simulate", str(ROOT / "recipes" / "smoke.yaml"), "--episodes", "2", "--db", str(tmp_path / "d")]) == 3
    out, err = capsys.readouterr()
    assert err == "every episode aborted: task_generator_invalid x2: why\n"
    assert "all_aborted" not in json.loads(out)  # said once, on stderr


def test_a_tool_too_long_for_any_prompt_is_refused_when_the_pool_loads(tmp_path, capsys):
    tools = [{"type": "function", "function": {"name": "huge_tool", "description": "word " * 9000,
                                               "parameters": {"type": "object", "properties": {}}}},
             {"type": "function", "function": {"name": "small", "description": "fine",
                                               "parameters": {"type": "object", "properties": {}}}}]
    (tmp_path / "tools.json").write_text(json.dumps(tools))
    recipe = yaml.safe_load((ROOT / "recipes" / "smoke.yaml").read_text())
    recipe["tools"]["file"] = "tools.json"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["tools", "list", str(tmp_path / "r.yaml"), "--db", str(tmp_path / "d.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tool 'huge_tool' alone is 9,0" in err and "context window of 4,096" in err, err
    tools[0]["function"]["description"] = "word " * 500  # longer than 2,048 characters, well inside the windows
    (tmp_path / "tools.json").write_text(json.dumps(tools))
    assert main(["tools", "list", str(tmp_path / "r.yaml"), "--db", str(tmp_path / "d.sqlite")]) == 0


def test_tool_sizes_go_unchecked_where_the_models_files_are_not_here(tmp_path, capsys, monkeypatch):
    """`tools list` on a recipe whose model is not downloaded: nothing to count with, no traceback."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    tools = [{"type": "function", "function": {"name": "longish", "description": "word " * 700,
                                               "parameters": {"type": "object", "properties": {}}}}]
    (tmp_path / "tools.json").write_text(json.dumps(tools))
    recipe = yaml.safe_load((ROOT / "recipes" / "desktop-24gb.yaml").read_text())  # Qwen/Qwen3-8B, not cached
    recipe["tools"] = {"file": "tools.json"}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert main(["tools", "list", str(tmp_path / "r.yaml"), "--db", str(tmp_path / "d.sqlite")]) == 0
    assert "1 category, 1 toolset, 1 tool" in capsys.readouterr().out
