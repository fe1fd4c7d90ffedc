"""Resume bookkeeping without a model: committed steps, what a kill leaves behind, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import sqlite3

import pytest
from test_role_output import make_draft, make_task
from test_store import trajectory

from trustee_lite.config import parse_recipe
from trustee_lite.errors import UserError
from trustee_lite.metrics import time_split
from trustee_lite.records import StepRecord, StepTimes, UpdateStats
from trustee_lite.store import Store
from trustee_lite.train.checkpoints import checkpoint_dir, open_run, prune_checkpoints, recipe_hash
from trustee_lite.train.curriculum import SuccessEstimator

RECIPE = {"name": "t", "train": {"steps": 5, "tasks_per_step": 1}}


def recipe(**train):
    return parse_recipe({**RECIPE, "train": {**RECIPE["train"], **train}})


def commit_step(store, run_id, out, step, level, rewards):
    """What the trainer does for one step: its records, its checkpoint, then the step row."""
    task_id = store.add_draft(run_id, make_draft(make_task(index=step), level), step)
    for r in range(2):
        store.add_trajectory(run_id, task_id, dataclasses.replace(trajectory(r), task_index=step), step)
    folder = checkpoint_dir(out, step)
    folder.mkdir(parents=True)
    est = SuccessEstimator("window", 4)
    est.update(rewards)
    (folder / "state.json").write_text(json.dumps({"step": step, "level": level + 3, "estimator": est.state()}))
    store.add_step(run_id, step_row(step, level, folder))


def step_row(step, level, folder):
    zero = dict.fromkeys(("tasks", "episodes", "aborted", "policy_tokens", "simulator_tokens", "cache_hits",
                          "cache_misses"), 0)
    unknown = dict.fromkeys(("mean_reward", "std_reward", "success_rate", "signal", "signal_rolling", "mean_tool_reward",
                             "mean_user_reward"))
    update = UpdateStats(loss=None, pg_loss=None, kl=None, grad_norm=None, learning_rate=0.0, clip_fraction=None,
                         policy_tokens=0, samples=0, optimizer_steps=0, seconds=0.0)
    times = StepTimes(wall_s=1.0, policy_gen_s=1.0, simulation_s=1.0, training_s=1.0, other_s=1.0)
    return StepRecord(step=step, level=level, next_level=level + 3, knobs="{}", abort_reasons="{}", update=update,
                      times=times, checkpoint=str(folder), **zero, **unknown)


def test_fresh_run_starts_at_step_one(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        state = open_run(store, recipe(), tmp_path / "out", seed=0, fresh=False)
    assert (state.next_step, state.level, state.checkpoint, state.estimator.value) == (1, 1, None, None)


def test_resume_after_kill_between_checkpoint_and_commit(tmp_path):
    """Killed after step 3's checkpoint was written but before its row: step 3 runs again from
    step 2's checkpoint, and step 3's trajectories are dropped (never counted twice)."""
    out = tmp_path / "out"
    with Store(tmp_path / "db.sqlite") as store:
        first = open_run(store, recipe(), out, seed=7, fresh=False)
        commit_step(store, first.run_id, out, 1, 1, [1.0, 1.0])
        commit_step(store, first.run_id, out, 2, 4, [1.0, 1.0, 1.0, -1.0])
        task_id = store.add_draft(first.run_id, make_draft(make_task(index=3), 7), 3)  # step 3, unfinished
        store.add_trajectory(first.run_id, task_id, dataclasses.replace(trajectory(0), task_index=3), 3)
        checkpoint_dir(out, 3).mkdir(parents=True)
        (out / "checkpoints" / "step-000004.tmp").mkdir()  # a half-written checkpoint

        state = open_run(store, recipe(), out, seed=7, fresh=False)
        assert state.run_id == first.run_id
        assert state.next_step == 3
        assert state.checkpoint == checkpoint_dir(out, 2)
        assert state.level == 7  # the level the committed step 2 moved to
        assert state.estimator.value == pytest.approx(0.5)  # window of [1, 1, 1, -1]
        assert state.discarded == 1
        assert store.run_totals(first.run_id)["episodes"] == 4
        rows = store.db.execute("SELECT step, count(*) FROM trajectories GROUP BY step").fetchall()
        assert rows == [(1, 2), (2, 2)]
        assert store.db.execute("SELECT count(*) FROM tasks WHERE step = 3").fetchone()[0] == 0
        assert store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_resume_refuses_another_recipe_or_seed(tmp_path):
    out = tmp_path / "out"
    with Store(tmp_path / "db.sqlite") as store:
        open_run(store, recipe(), out, seed=0, fresh=False)
        with pytest.raises(UserError, match="differs from the recipe"):
            open_run(store, recipe(learning_rate=1e-3), out, seed=0, fresh=False)
        with pytest.raises(UserError, match="--seed: 5 differs"):
            open_run(store, recipe(), out, seed=5, fresh=False)
        again = open_run(store, recipe(steps=9), out, seed=0, fresh=False)  # more steps: same run
        assert again.next_step == 1
        fresh = open_run(store, recipe(learning_rate=1e-3), out, seed=5, fresh=True)
        assert fresh.run_id != again.run_id


def test_recipe_hash_ignores_only_the_step_count():
    assert recipe_hash(recipe(steps=3)) == recipe_hash(recipe(steps=300))
    assert recipe_hash(recipe()) != recipe_hash(recipe(clip_ratio=0.3))


def test_missing_checkpoint_is_a_user_error(tmp_path):
    out = tmp_path / "out"
    with Store(tmp_path / "db.sqlite") as store:
        state = open_run(store, recipe(), out, seed=0, fresh=False)
        commit_step(store, state.run_id, out, 1, 1, [1.0])
        (checkpoint_dir(out, 1) / "state.json").unlink()
        with pytest.raises(UserError, match="checkpoint of step 1 is missing"):
            open_run(store, recipe(), out, seed=0, fresh=False)


def test_prune_keeps_every_kth_the_latest_and_the_final(tmp_path):
    for step in range(1, 8):
        checkpoint_dir(tmp_path, step).mkdir(parents=True)
    (tmp_path / "checkpoints" / "step-000008.tmp").mkdir()
    prune_checkpoints(tmp_path, every=3, final_step=10)
    left = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert left == ["step-000003", "step-000006", "step-000007"]


def test_older_database_gains_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, seed INTEGER "
                "NOT NULL, recipe TEXT NOT NULL, status TEXT NOT NULL, started REAL NOT NULL, finished REAL, summary TEXT)")
    con.execute("INSERT INTO runs (kind, name, seed, recipe, status, started) VALUES ('simulate', 'old', 0, '{}', 'done', 0)")
    con.commit()
    con.close()
    with Store(path) as store:
        assert {"out_dir", "recipe_hash"} <= set(store.db["runs"].columns_dict)
        assert store.db.execute("SELECT name FROM runs").fetchall() == [("old",)]


def test_the_time_split_by_hand():
    split = time_split(wall_s=100.0, policy_s=60.0, simulation_s=20.0, update_s=12.0, checkpoint_s=3.0,
                       prefill_s=15.0, decode_s=44.0, compile_s=30.0)
    assert split == {"wall_s": 100.0, "policy_gen_s": 60.0, "simulation_s": 20.0, "training_s": 15.0, "other_s": 5.0,
                     "policy_prefill_s": 15.0, "policy_decode_s": 44.0, "update_s": 12.0, "checkpoint_s": 3.0,
                     "compile_s": 30.0}  # compiling is inside generation, not besides it
    overlapping = time_split(wall_s=100.0, policy_s=70.0, simulation_s=60.0, update_s=1.0, checkpoint_s=0.5)
    assert overlapping["other_s"] == 0.0 and overlapping["training_s"] == 1.5  # generation and simulation overlapped


def test_a_recorded_run_closes_done_interrupted_or_failed_with_its_reason(tmp_path):
    import asyncio

    from trustee_lite.runtime import recorded_run

    def rows(store):
        return [(r["status"], json.loads(r["summary"])) for r in store.db.query("SELECT * FROM runs ORDER BY id")]

    with Store(tmp_path / "db.sqlite") as store:
        with recorded_run(store, "simulate", recipe(), 0) as run:
            run.summarize = lambda: {"episodes": 2}
        assert rows(store) == [("done", {"episodes": 2})] and run.summary == {"episodes": 2}
        for error in (KeyboardInterrupt(), asyncio.CancelledError(), UserError("tools.json", "line 3: invalid JSON")):
            with pytest.raises(type(error)), recorded_run(store, "simulate", recipe(), 0):
                raise error
        assert rows(store)[1:] == [("interrupted", {}), ("interrupted", {}),
                                   ("failed", {"failure": "tools.json: line 3: invalid JSON"})]
        with recorded_run(store, "train", recipe(), 0, run_id=run.id) as again:  # carried on, not opened again
            again.status = "interrupted"  # a graceful stop (the first Ctrl-C of a training run)
        assert len(rows(store)) == 4 and rows(store)[0] == ("interrupted", {})
