"""End to end with the embedded model: `simulate` through the CLI's entry point, twice with the
same seed (in this process: the models' imports are paid once; tests/test_train_resume.py runs
the command in subprocesses)."""

from __future__ import annotations

import contextlib
import io
import json
import sqlite3
from pathlib import Path

import pytest

from trustee_lite.__main__ import main
from trustee_lite.store import decode_ints

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"episodes", "aborted", "mean_reward", "cache_hits", "cache_misses", "tokens_per_s", "wall_s"}


def simulate(db: Path, episodes: int = 2) -> dict:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["simulate", str(ROOT / "recipes" / "smoke.yaml"), "--episodes", str(episodes), "--db", str(db),
                       "--seed", "3", "--set", "policy.max_new_tokens=16"])
    assert status == 0, err.getvalue()[-3000:]
    lines = out.getvalue().strip().splitlines()
    assert len(lines) == 1, out.getvalue()  # stdout is exactly the one JSON line
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    db = tmp_path_factory.mktemp("e2e") / "run.sqlite"
    return db, simulate(db), simulate(db)


def test_simulate_reports_the_run(two_runs):
    _, first, _ = two_runs
    assert KEYS <= set(first)
    assert first["episodes"] == 2
    assert first["cache_misses"] > 0 and first["tokens_per_s"] > 0
    if first["aborted"] < first["episodes"]:
        assert -1.0 <= first["mean_reward"] <= 1.0


def test_second_run_with_the_same_seed_comes_from_the_cache(two_runs):
    _, first, second = two_runs
    assert second["cache_misses"] == 0 and second["cache_hits"] == first["cache_hits"] + first["cache_misses"]
    assert second["policy_tokens"] == first["policy_tokens"]  # the policy replays exactly
    assert second["mean_reward"] == first["mean_reward"]


def test_the_run_record_holds_every_episode(two_runs):
    db, first, second = two_runs
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    runs = con.execute("SELECT id, kind, status FROM runs ORDER BY id").fetchall()
    assert runs == [(first["run_id"], "simulate", "done"), (second["run_id"], "simulate", "done")]
    rows = con.execute("SELECT token_ids, policy_mask, prompt_tokens, policy_tokens, abort_reason FROM trajectories "
                       "WHERE run_id = ?", [first["run_id"]]).fetchall()
    assert len(rows) == 2
    for token_blob, mask_blob, prompt_tokens, policy_tokens, abort_reason in rows:
        if abort_reason == "task_generator_invalid":
            continue
        ids, mask = decode_ints(token_blob), decode_ints(mask_blob)
        assert len(ids) == len(mask) > prompt_tokens
        assert sum(mask) == policy_tokens > 0 and mask[:prompt_tokens] == [0] * prompt_tokens
