"""The SQLite store: plain tables, WAL, blobs that round-trip, atomic trajectory records."""

from __future__ import annotations

import sqlite3

import pytest
from test_role_output import make_draft, make_task

from trustee_lite.env.toolcalls import ToolCall
from trustee_lite.errors import UserError
from trustee_lite.records import ToolResult, Trajectory, Turn
from trustee_lite.store import Store, decode_floats, decode_ints, encode_floats, encode_ints


def trajectory(rollout=0) -> Trajectory:
    call = ToolCall(name="get_weather", arguments={"city": "Paris"})
    turns = (
        Turn(role="assistant", content="<tool_call>...</tool_call>", calls=(call,)),
        Turn(role="tool", content="", results=(ToolResult(call, '{"rain": false}', 1),), reward=1.0),
        Turn(role="assistant", content="No rain today."),
        Turn(role="user", content="", reward=1.0),
    )
    return Trajectory(task_index=0, rollout_index=rollout, turns=turns, end_reason="user_done", final_reward=1.0,
                      verifier_reasoning="good", token_ids=(5, 6, 7, 8), policy_mask=(0, 1, 1, 0),
                      logprobs=(0.0, -0.25, -1.5, 0.0), prompt_tokens=1)


def test_blobs_round_trip():
    assert decode_ints(encode_ints([0, -1, 2**31 - 1, 49152])) == [0, -1, 2**31 - 1, 49152]
    assert decode_floats(encode_floats([0.0, -0.25, -1.5])) == [0.0, -0.25, -1.5]


def test_trajectory_and_turns_are_recorded(tmp_path):
    path = tmp_path / "run.sqlite"
    with Store(path) as store:
        run = store.start_run("simulate", "t", 0, {"a": 1})
        task_id = store.add_draft(run, make_draft(make_task(), level=1))
        traj_id = store.add_trajectory(run, task_id, trajectory())
        store.finish_run(run, "done", {"episodes": 1})
        assert store.integrity_ok()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    row = db.execute("SELECT final_reward, tool_turns, user_turns, policy_tokens, mean_tool_reward, token_ids "
                     "FROM trajectories WHERE id = ?", [traj_id]).fetchone()
    assert row[:5] == (1.0, 1, 1, 2, 1.0)
    assert decode_ints(row[5]) == [5, 6, 7, 8]
    roles = [r[0] for r in db.execute("SELECT role FROM turns WHERE trajectory_id = ? ORDER BY turn_index", [traj_id])]
    assert roles == ["assistant", "tool", "assistant", "user"]
    assert db.execute("SELECT status FROM runs").fetchone()[0] == "done"


def test_a_trajectory_is_written_whole_or_not_at_all(tmp_path):
    with Store(tmp_path / "run.sqlite") as store:
        run = store.start_run("simulate", "t", 0, {})
        store.add_trajectory(run, None, trajectory(rollout=0))
        with pytest.raises(sqlite3.IntegrityError):  # the same (run, task, rollout) twice
            store.add_trajectory(run, None, trajectory(rollout=0))
        counts = store.db.execute("SELECT (SELECT count(*) FROM trajectories), (SELECT count(*) FROM turns)").fetchone()
    assert counts == (1, 4)


def test_cache_put_and_get(tmp_path):
    with Store(tmp_path / "c.sqlite") as store:
        assert store.cache_get("k") is None
        store.cache_put("k", "verifier", '{"reward": 1}', 5)
        assert store.cache_get("k") == '{"reward": 1}'


def test_unopenable_database_is_a_user_error(tmp_path):
    (tmp_path / "not_a_db.sqlite").write_text("this is text, not SQLite " * 100)
    with pytest.raises(UserError, match=r"damaged \(file is not a database\); nothing was written"):
        Store(tmp_path / "not_a_db.sqlite")
    assert (tmp_path / "not_a_db.sqlite").read_text() == "this is text, not SQLite " * 100


def test_the_step_record_has_the_columns_of_the_steps_table(tmp_path):
    from test_runstate import step_row

    with Store(tmp_path / "db.sqlite") as store:
        columns = list(store.db["steps"].columns_dict)
    # its own fields, the update's columns and the step's times, flattened into one row
    assert sorted(step_row(1, 1, tmp_path).row()) == sorted(c for c in columns if c not in ("id", "run_id", "created"))


def test_an_older_database_keeps_its_steps_under_the_new_names(tmp_path):
    """Before the curriculum's signal had its own name, `steps` called it success_batch and
    success_rolling: opening such a file renames them in place, values kept, and adds
    success_rate (unknown for the old steps)."""
    import sqlite3

    db = tmp_path / "old.sqlite"
    with sqlite3.connect(db) as con:
        con.execute("CREATE TABLE steps (id INTEGER PRIMARY KEY, run_id INTEGER, step INTEGER, success_batch REAL, "
                    "success_rolling REAL)")
        con.execute("INSERT INTO steps (run_id, step, success_batch, success_rolling) VALUES (1, 1, -0.5, -0.25)")
    with Store(db) as store:
        row = next(store.db.query("SELECT * FROM steps"))
    assert (row["signal"], row["signal_rolling"], row["success_rate"]) == (-0.5, -0.25, None)
    assert "success_batch" not in row


def test_turn_rewards_are_recorded_and_advantages_commit_with_the_step(tmp_path):
    from test_runstate import step_row

    with Store(tmp_path / "run.sqlite") as store:
        run = store.start_run("train", "t", 0, {})
        store.add_trajectory(run, None, trajectory(rollout=0), step=1)
        store.add_trajectory(run, None, trajectory(rollout=1), step=1)
        store.add_step(run, step_row(1, 1, tmp_path), {(0, 0): 0.7071, (0, 1): None})
        turns = store.db.execute("SELECT role, turn_reward FROM turns ORDER BY id LIMIT 4").fetchall()
        advantages = [r[0] for r in store.db.execute("SELECT advantage FROM trajectories ORDER BY rollout_index")]
    assert turns == [("assistant", 1.0), ("tool", None), ("assistant", 1.0), ("user", None)]
    assert advantages == [0.7071, None]
