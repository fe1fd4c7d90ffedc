"""SQLite: the simulation cache and the run record, as plain tables any SQLite tool can read.

Tables: cache, runs, tasks, trajectories, turns, steps (training), eval_results and eval_items
(evaluation and simulator calibration: one row per category or case kind, and per item),
toolsets (tools.synthesize: toolsets the simulator wrote, reused by later runs). Token
ids, masks and log-probs are stored as little-endian int32/float32 blobs (see decode_ints /
decode_floats). WAL mode; each record is written in one transaction, so a killed process
leaves every finished record intact.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from array import array
from pathlib import Path
from typing import Any

import orjson
import sqlite_utils

from trustee_lite.errors import UserError
from trustee_lite.metrics import mean
from trustee_lite.records import StepRecord, TaskDraft, Trajectory, Turn

SCHEMA = """
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY, role TEXT NOT NULL, text TEXT NOT NULL, tokens INTEGER NOT NULL, created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, name TEXT NOT NULL, seed INTEGER NOT NULL,
    recipe TEXT NOT NULL, status TEXT NOT NULL, started REAL NOT NULL, finished REAL, summary TEXT,
    out_dir TEXT, recipe_hash TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), step INTEGER, task_index INTEGER NOT NULL,
    category TEXT NOT NULL, level INTEGER NOT NULL, knobs TEXT NOT NULL, tools TEXT NOT NULL,
    status TEXT NOT NULL, failure TEXT, user_intent TEXT, expected_tool_calls TEXT, user_persona TEXT,
    first_user_query TEXT, origin TEXT, UNIQUE (run_id, task_index)
);
CREATE TABLE IF NOT EXISTS trajectories (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), step INTEGER,
    task_id INTEGER REFERENCES tasks(id), task_index INTEGER NOT NULL, rollout_index INTEGER NOT NULL, final_reward REAL, end_reason TEXT NOT NULL,
    abort_reason TEXT, verifier_reasoning TEXT, assistant_turns INTEGER NOT NULL, tool_turns INTEGER NOT NULL,
    user_turns INTEGER NOT NULL, mean_tool_reward REAL, mean_user_reward REAL, prompt_tokens INTEGER NOT NULL,
    policy_tokens INTEGER NOT NULL, total_tokens INTEGER NOT NULL, token_ids BLOB, policy_mask BLOB,
    logprobs BLOB, created REAL NOT NULL, advantage REAL, UNIQUE (run_id, task_index, rollout_index)
);
CREATE TABLE IF NOT EXISTS turns (
    id INTEGER PRIMARY KEY, trajectory_id INTEGER NOT NULL REFERENCES trajectories(id),
    turn_index INTEGER NOT NULL, role TEXT NOT NULL, content TEXT NOT NULL, reward REAL, calls TEXT,
    turn_reward REAL
);
CREATE TABLE IF NOT EXISTS steps (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), step INTEGER NOT NULL,
    level INTEGER NOT NULL, next_level INTEGER NOT NULL, knobs TEXT NOT NULL, tasks INTEGER NOT NULL,
    episodes INTEGER NOT NULL, aborted INTEGER NOT NULL, abort_reasons TEXT NOT NULL, mean_reward REAL,
    std_reward REAL, success_rate REAL, signal REAL, signal_rolling REAL, mean_tool_reward REAL, mean_user_reward REAL,
    policy_tokens INTEGER NOT NULL, simulator_tokens INTEGER NOT NULL, cache_hits INTEGER NOT NULL,
    cache_misses INTEGER NOT NULL, samples INTEGER NOT NULL, loss REAL, pg_loss REAL, kl REAL, grad_norm REAL,
    learning_rate REAL, clip_fraction REAL, wall_s REAL NOT NULL, policy_gen_s REAL NOT NULL,
    simulation_s REAL NOT NULL, training_s REAL NOT NULL, other_s REAL NOT NULL, checkpoint TEXT NOT NULL,
    created REAL NOT NULL, UNIQUE (run_id, step)
);
CREATE TABLE IF NOT EXISTS eval_results (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), adapter TEXT, adapter_step INTEGER,
    benchmark TEXT NOT NULL, category TEXT NOT NULL, count INTEGER NOT NULL, score REAL, errors TEXT NOT NULL,
    created REAL NOT NULL, figures TEXT, UNIQUE (run_id, benchmark, category)
);
CREATE TABLE IF NOT EXISTS eval_items (
    id INTEGER PRIMARY KEY, run_id INTEGER NOT NULL REFERENCES runs(id), category TEXT NOT NULL,
    item_id TEXT NOT NULL, valid INTEGER NOT NULL, kind TEXT, error_type TEXT, detail TEXT, output TEXT NOT NULL,
    UNIQUE (run_id, category, item_id)
);
CREATE TABLE IF NOT EXISTS toolsets (
    id INTEGER PRIMARY KEY, domain TEXT NOT NULL, name TEXT NOT NULL, description TEXT NOT NULL,
    tools TEXT NOT NULL, simulator TEXT NOT NULL, created REAL NOT NULL, UNIQUE (domain, name)
);
CREATE INDEX IF NOT EXISTS turns_by_trajectory ON turns (trajectory_id);
CREATE INDEX IF NOT EXISTS trajectories_by_run ON trajectories (run_id);
"""

# Columns added after the first release, per table (ALTER TABLE adds them to an older file).
ADDED_COLUMNS = {"runs": ("out_dir TEXT", "recipe_hash TEXT", "tool_names TEXT"), "tasks": ("step INTEGER", "origin TEXT"),
                 "trajectories": ("step INTEGER", "advantage REAL"), "turns": ("turn_reward REAL",),
                 "eval_results": ("figures TEXT",),
                 "steps": ("policy_prefill_s REAL", "policy_decode_s REAL", "update_s REAL", "checkpoint_s REAL",
                           "prefill_tokens INTEGER", "reused_tokens INTEGER", "gpu_util REAL", "gpu_mem_gib REAL",
                           "compile_s REAL", "success_rate REAL")}
# Columns renamed since, per table: (old name, new name); an older file's are renamed in place.
RENAMED_COLUMNS = {"steps": (("success_batch", "signal"), ("success_rolling", "signal_rolling"))}


RECOVER = ("to recover: restore a copy, or `sqlite3 FILE .recover | sqlite3 recovered.sqlite`; the adapters of "
           "training runs are kept in their folders (runs/NAME/checkpoints)")


class Store:
    """The SQLite file of a project: the simulation cache and the run record.

    Opening checks the file before anything is written into it: one that is read-only (the file
    or its folder: SQLite writes its journal beside it) or damaged (`PRAGMA quick_check`, about
    1 s on a 1 GB file) is refused in one line. SQLite errors after opening (a full disk, a
    database locked past the timeout) end the command in one line naming the file (__main__,
    through `Store.last`)."""

    last: Path | None = None  # the file opened last: the one an SQLite error is about

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._refuse_read_only()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.is_file() and self.path.stat().st_size > 0
            self.db = sqlite_utils.Database(self.path)
            if existed:
                self._refuse_damaged()
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: safe against a killed process
            self.db.execute("PRAGMA busy_timeout=5000")
            with self.db.atomic():
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self._add_new_columns()
        except (OSError, sqlite3.DatabaseError) as err:
            raise UserError(f"database {self.path}", f"cannot open: {err}") from None
        Store.last = self.path

    def _refuse_read_only(self) -> None:
        folder = self.path.parent if self.path.parent.exists() else None
        if self.path.exists() and not os.access(self.path, os.W_OK):
            raise UserError(f"database {self.path}", "the file is read-only: nothing can be recorded (make it "
                            "writable, or name another file with --db)")
        if folder is not None and not os.access(folder, os.W_OK):
            raise UserError(f"database {self.path}", f"its folder {folder} is read-only: SQLite keeps its journal "
                            "beside the file (name a file in a writable folder with --db)")

    def _refuse_damaged(self) -> None:
        try:
            problems = [row[0] for row in self.db.execute("PRAGMA quick_check").fetchall()]
        except sqlite3.DatabaseError as err:
            problems = [str(err)]
        if problems != ["ok"]:
            self.db.close()
            first = " ".join(problems[0].replace("*** in database main ***", "").split())[:160]
            raise UserError(f"database {self.path}", f"damaged ({first}); nothing was written to it; "
                            + RECOVER.replace("FILE", str(self.path)))
    @classmethod
    def existing(cls, path: str | Path, first: str) -> Store:
        """A database a command only reads: refused in one line when there is none (`first`: the
        commands that make one)."""
        if not Path(path).is_file():
            raise UserError(str(path), f"no such database (run {first} first)")
        return cls(path)

    def _add_new_columns(self) -> None:
        """A database written by an older version keeps its data, under the newer columns' names,
        and gains the newer columns."""
        for table, renames in RENAMED_COLUMNS.items():
            have = set(self.db[table].columns_dict)
            for old, new in renames:
                if old in have and new not in have:
                    self.db.execute(f"ALTER TABLE {table} RENAME COLUMN {old} TO {new}")
        for table, columns in ADDED_COLUMNS.items():
            have = set(self.db[table].columns_dict)
            for column in columns:
                if column.split()[0] not in have:
                    self.db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- simulation cache ------------------------------------------------------------------
    def cache_get(self, key: str) -> str | None:
        row = self.db.execute("SELECT text FROM cache WHERE key = ?", [key]).fetchone()
        return None if row is None else row[0]

    def cache_put(self, key: str, role: str, text: str, tokens: int) -> None:
        with self.db.atomic():
            self.db.execute(
                "INSERT OR REPLACE INTO cache (key, role, text, tokens, created) VALUES (?, ?, ?, ?, ?)",
                [key, role, text, tokens, time.time()],
            )

    # -- run record ------------------------------------------------------------------------
    def start_run(self, kind: str, name: str, seed: int, recipe: dict[str, Any], out_dir: str | None = None,
                  recipe_hash: str | None = None) -> int:
        with self.db.atomic():
            return self.db["runs"].insert({
                "kind": kind, "name": name, "seed": seed, "recipe": _json(recipe), "status": "running",
                "started": time.time(), "out_dir": out_dir, "recipe_hash": recipe_hash,
            }).last_pk

    def set_tool_names(self, run_id: int, names: dict[str, str]) -> None:
        """Record the names the run's pool made safe: safe name -> the source's name."""
        with self.db.atomic():
            self.db["runs"].update(run_id, {"tool_names": _json(names) if names else None})

    def latest_run(self, kind: str, out_dir: str) -> dict | None:
        """The newest run of this kind writing to out_dir, if any."""
        rows = list(self.db.query(
            "SELECT * FROM runs WHERE kind = ? AND out_dir = ? ORDER BY id DESC LIMIT 1", [kind, out_dir]))
        return rows[0] if rows else None

    def set_run_status(self, run_id: int, status: str) -> None:
        with self.db.atomic():
            self.db["runs"].update(run_id, {"status": status})

    def last_step(self, run_id: int) -> dict | None:
        rows = list(self.db.query("SELECT * FROM steps WHERE run_id = ? ORDER BY step DESC LIMIT 1", [run_id]))
        return rows[0] if rows else None

    def discard_after(self, run_id: int, step: int) -> int:
        """Delete what an unfinished step left (tasks, trajectories, turns after `step`); return
        the number of trajectories removed. Committed steps are never touched."""
        with self.db.atomic():
            doomed = "SELECT id FROM trajectories WHERE run_id = ? AND step > ?"
            removed = self.db.execute(f"SELECT count(*) FROM ({doomed})", [run_id, step]).fetchone()[0]
            self.db.execute(f"DELETE FROM turns WHERE trajectory_id IN ({doomed})", [run_id, step])
            self.db.execute("DELETE FROM trajectories WHERE run_id = ? AND step > ?", [run_id, step])
            self.db.execute("DELETE FROM tasks WHERE run_id = ? AND step > ?", [run_id, step])
        return removed

    def add_step(self, run_id: int, record: StepRecord, advantages: dict[tuple[int, int], float] | None = None) -> None:
        """Commit a training step (its row is what makes it count on resume), with the group
        advantage of each of its trajectories ((task_index, rollout_index) -> A)."""
        with self.db.atomic():
            self.db.conn.executemany(
                "UPDATE trajectories SET advantage = ? WHERE run_id = ? AND task_index = ? AND rollout_index = ?",
                [(adv, run_id, task, rollout) for (task, rollout), adv in (advantages or {}).items()])
            self.db["steps"].insert({"run_id": run_id, **record.row(), "created": time.time()})

    def step_seconds(self, run_id: int) -> list[float]:
        """The wall times of a run's committed steps, in step order."""
        return [row[0] for row in self.db.execute("SELECT wall_s FROM steps WHERE run_id = ? ORDER BY step", [run_id])]

    def run_ids(self) -> list[int]:
        """Every recorded run, oldest first."""
        return [row[0] for row in self.db.execute("SELECT id FROM runs ORDER BY id")]

    def run_ends(self, run_ids: list[int]) -> list[dict[str, Any]]:
        """How the given runs stand: id, kind, status, and the one-line reason a run failed."""
        rows = self.db.query(f"SELECT id, kind, status, summary FROM runs WHERE id IN ({', '.join('?' * len(run_ids))}) "
                             "ORDER BY id", list(run_ids))
        return [{"id": r["id"], "kind": r["kind"], "status": r["status"],
                 "failure": orjson.loads(r["summary"] or "{}").get("failure")} for r in rows]

    def run_totals(self, run_id: int) -> dict[str, Any]:
        """Episode counts and mean reward over the committed steps of a run."""
        row = self.db.execute(
            "SELECT count(*), sum(abort_reason IS NOT NULL), avg(final_reward) FROM trajectories "
            "WHERE run_id = ? AND step <= coalesce((SELECT max(step) FROM steps WHERE run_id = ?), 0)",
            [run_id, run_id]).fetchone()
        return {"episodes": row[0], "aborted": row[1] or 0, "mean_reward": row[2]}

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        with self.db.atomic():
            self.db["runs"].update(run_id, {"status": status, "finished": time.time(), "summary": _json(summary)})

    def add_draft(self, run_id: int, draft: TaskDraft, step: int | None = None) -> int:
        """Record a task slot: its task, or the generator's failure."""
        task = draft.task
        fields = {"status": "failed", "failure": draft.failure} if task is None else {
            "status": "ok", "user_intent": task.user_intent, "expected_tool_calls": _json(task.expected_tool_calls),
            "user_persona": task.user_persona, "first_user_query": task.first_user_query,
        }
        with self.db.atomic():
            return self.db["tasks"].insert({
                "run_id": run_id, "step": step, "task_index": draft.index, "category": draft.category,
                "level": draft.level, "knobs": _json(draft.knobs.__dict__), "tools": _json(list(draft.tool_names)),
                "origin": draft.origin, **fields,
            }).last_pk

    def add_trajectory(self, run_id: int, task_id: int | None, traj: Trajectory, step: int | None = None) -> int:
        """Write a trajectory and its turns in one transaction."""
        count = {role: sum(t.role == role for t in traj.turns) for role in ("assistant", "tool", "user")}
        with self.db.atomic():
            traj_id = self.db["trajectories"].insert({
                "run_id": run_id, "step": step, "task_id": task_id, "task_index": traj.task_index,
                "rollout_index": traj.rollout_index, "final_reward": traj.final_reward,
                "end_reason": traj.end_reason, "abort_reason": traj.abort_reason,
                "verifier_reasoning": traj.verifier_reasoning, "assistant_turns": count["assistant"],
                "tool_turns": count["tool"], "user_turns": count["user"],
                "mean_tool_reward": mean(traj.rewards("tool")), "mean_user_reward": mean(traj.rewards("user")),
                "prompt_tokens": traj.prompt_tokens, "policy_tokens": traj.policy_tokens,
                "total_tokens": len(traj.token_ids), "token_ids": encode_ints(traj.token_ids),
                "policy_mask": encode_ints(traj.policy_mask), "logprobs": encode_floats(traj.logprobs),
                "created": time.time(),
            }).last_pk
            turn_rewards = iter(traj.assistant_turn_rewards())
            self.db["turns"].insert_all(
                ({"trajectory_id": traj_id, "turn_index": i, "role": t.role, "content": t.content,
                  "reward": t.reward, "calls": _turn_calls(t),
                  "turn_reward": next(turn_rewards) if t.role == "assistant" else None} for i, t in enumerate(traj.turns)),
            )
        return traj_id

    # -- evaluation ------------------------------------------------------------------------
    def add_eval_item(self, run_id: int, category: str, item_id: str, outcome, output: str) -> None:
        with self.db.atomic():
            self.db["eval_items"].insert({
                "run_id": run_id, "category": category, "item_id": item_id, "valid": int(outcome.valid),
                "kind": outcome.kind, "error_type": outcome.error_type, "detail": outcome.detail, "output": output,
            })

    def add_eval_result(self, run_id: int, record: dict[str, Any]) -> None:
        with self.db.atomic():
            self.db["eval_results"].insert({"run_id": run_id, **record, "errors": _json(record["errors"]),
                                            "figures": _json(record.get("figures")), "created": time.time()})

    def eval_results(self, run_ids: list[int] | None = None) -> list[dict]:
        """Stored evaluation results, oldest first (all runs, or the given ones)."""
        where = f"WHERE run_id IN ({', '.join('?' * len(run_ids))})" if run_ids else ""
        rows = self.db.query(f"SELECT * FROM eval_results {where} ORDER BY id", list(run_ids or []))
        return [{**row, "errors": orjson.loads(row["errors"]), "figures": orjson.loads(row["figures"] or "null")}
                for row in rows]

    # -- synthesized toolsets -------------------------------------------------------------
    def toolsets(self, domain: str) -> list[dict[str, Any]]:
        """The toolsets stored for a domain, oldest first, with their tools parsed."""
        rows = self.db.query("SELECT * FROM toolsets WHERE domain = ? ORDER BY id", [domain])
        return [{**row, "tools": orjson.loads(row["tools"])} for row in rows]

    def add_toolset(self, domain: str, name: str, description: str, tools: list[dict[str, Any]], simulator: str) -> None:
        with self.db.atomic():
            self.db["toolsets"].insert({"domain": domain, "name": name, "description": description,
                                        "tools": _json(tools), "simulator": simulator, "created": time.time()})

    def integrity_ok(self) -> bool:
        return self.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _turn_calls(turn: Turn) -> str | None:
    if turn.role == "assistant" and turn.calls:
        return _json([{"name": c.name, "arguments": c.arguments, "error": c.error} for c in turn.calls])
    if turn.role == "tool":
        return _json([{"name": r.call.name, "arguments": r.call.arguments, "error": r.call.error,
                       "result": r.result, "reward": r.reward} for r in turn.results])
    return None


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()


def _little_endian(values: array) -> array:
    if sys.byteorder != "little":
        values.byteswap()
    return values


def encode_ints(values) -> bytes:
    return _little_endian(array("i", values)).tobytes()


def encode_floats(values) -> bytes:
    return _little_endian(array("f", values)).tobytes()


def decode_ints(blob: bytes) -> list[int]:
    values = array("i")
    values.frombytes(blob)
    return list(_little_endian(values))


def decode_floats(blob: bytes) -> list[float]:
    values = array("f")
    values.frombytes(blob)
    return list(_little_endian(values))
