"""End to end with the embedded model: `simulate` through the CLI, twice with the same seed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from trustee_lite.store import decode_ints

ROOT = Path(__file__).resolve().parents[1]
KEYS = {"episodes", "aborted", "mean_reward", "cache_hits", "cache_misses", "tokens_per_s", "wall_s"}


def simulate(db: Path, episodes: int = 2) -> dict:
    proc = subprocess.run(
        [sys.executable, "-m", "trustee_lite", "simulate", "recipes/smoke.yaml", "--episodes", str(episodes),
         "--db", str(db), "--seed", "3", "--set", "policy.max_new_tokens=16"],
        capture_output=True, text=True, cwd=ROOT, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # stdout is exactly the one JSON line
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
