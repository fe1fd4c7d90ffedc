"""What the report shows, read from the run record: the runs, each training step's figures, the
valid-call rate per step, evaluation results, and the episodes of a sample of steps."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from trustee_lite.store import Store, decode_ints
from trustee_lite.train.grpo import turn_spans

STEP_FIGURES = ("mean_reward", "std_reward", "success_rate", "signal", "signal_rolling", "level", "next_level", "aborted",
                "episodes", "policy_tokens", "simulator_tokens", "loss", "kl", "wall_s", "policy_gen_s",
                "simulation_s", "training_s", "other_s", "policy_prefill_s", "policy_decode_s", "update_s",
                "checkpoint_s", "prefill_tokens", "reused_tokens", "gpu_util", "gpu_mem_gib", "compile_s")


@dataclass
class RunSeries:
    """One run: its label and, for a training run, one value per committed step of each figure."""

    id: int
    kind: str
    name: str
    seed: int
    status: str
    failure: str | None = None  # why a failed run stopped (its summary's first line)
    label: str = ""
    group: str = ""  # runs that differ only by seed share a group (and a colour in the plots)
    recipe: dict = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)
    figures: dict[str, list] = field(default_factory=dict)
    abort_reasons: list[dict[str, int]] = field(default_factory=list)
    valid_call_rate: list[float | None] = field(default_factory=list)
    signal_share: list[float | None] = field(default_factory=list)  # groups with unequal rewards


def runs(store: Store, ids: list[int] | None = None) -> list[RunSeries]:
    """The runs asked for (all when None), oldest first, each labelled by the settings that tell
    it apart from the other runs of its kind and recipe name."""
    where = f"WHERE id IN ({', '.join('?' * len(ids))})" if ids else ""
    rows = list(store.db.query(f"SELECT * FROM runs {where} ORDER BY id", list(ids or [])))
    out = [RunSeries(r["id"], r["kind"], r["name"], r["seed"], r["status"], recipe=orjson.loads(r["recipe"]),
                     failure=orjson.loads(r["summary"] or "{}").get("failure")) for r in rows]
    alike: dict[tuple[str, str], list[RunSeries]] = {}  # runs of one kind and recipe name
    for run in out:
        alike.setdefault((run.kind, run.name), []).append(run)
    for members in alike.values():
        for run, differs in zip(members, differences([r.recipe | {"seed": r.seed} for r in members])):
            extra = ", ".join(f"{k}={v}" for k, v in differs.items())
            run.label = f"run {run.id} {run.kind} {run.name}" + (f" ({extra})" if extra else "")
            run.group = f"{run.kind} {run.name} " + ", ".join(f"{k}={v}" for k, v in differs.items() if k != "seed")
    for run in out:
        if run.kind == "train":
            _read_steps(store, run)
    return out


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"train": {"learning_rate": 0}} -> {"train.learning_rate": 0}."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def differences(recipes: list[dict], most: int = 3) -> list[dict[str, str]]:
    """For each recipe, the settings in which the recipes differ ({"seed": "1",
    "train.learning_rate": "0"}), the seed first, at most `most` of them; the recipe's source
    file name never counts."""
    flat = [flatten(r) for r in recipes]
    keys = sorted({k for f in flat for k in f} - {"source"})
    differing = [k for k in keys if len({orjson.dumps(f.get(k)) for f in flat}) > 1]
    differing.sort(key=lambda k: (k != "seed", k))
    return [{k: _short(f.get(k)) for k in differing[:most]} for f in flat]


def _short(value: Any) -> str:
    return orjson.dumps(value).decode() if isinstance(value, (list, dict)) else str(value)


def _read_steps(store: Store, run: RunSeries) -> None:
    rows = list(store.db.query("SELECT * FROM steps WHERE run_id = ? ORDER BY step", [run.id]))
    run.steps = [r["step"] for r in rows]
    run.figures = {name: [r[name] for r in rows] for name in STEP_FIGURES}
    run.abort_reasons = [orjson.loads(r["abort_reasons"]) for r in rows]
    rates = valid_call_rates(store, run.id)
    run.valid_call_rate = [rates.get(step) for step in run.steps]
    shares = signal_shares(store, run.id)
    run.signal_share = [shares.get(step) for step in run.steps]


def signal_shares(store: Store, run_id: int) -> dict[int, float]:
    """Per step: the share of task groups whose finished rollouts scored unequally, the only
    groups GRPO learns from (a group of equal rewards has advantage 0)."""
    groups: dict[tuple[int, int], set[float]] = {}
    for step, task, reward in store.db.execute(
            "SELECT step, task_index, final_reward FROM trajectories WHERE run_id = ? AND abort_reason IS NULL",
            [run_id]):
        groups.setdefault((step, task), set()).add(reward)
    return _share_by_step((step, len(rewards) > 1) for (step, _), rewards in groups.items())


def _share_by_step(flags) -> dict:
    """(step, flag) pairs -> per step, the share of flags that are true."""
    counts: dict = {}
    for step, flag in flags:
        total = counts.setdefault(step, [0, 0])
        total[0] += flag
        total[1] += 1
    return {step: hits / n for step, (hits, n) in counts.items()}


def valid_call_rates(store: Store, run_id: int) -> dict[int | None, float]:
    """Per step: the share of finished (not aborted) episodes with at least one well-formed tool call."""
    made: dict[int, bool] = {}
    step_of: dict[int, int | None] = {}
    for traj_id, step, calls in store.db.execute(
            "SELECT t.id, t.step, u.calls FROM trajectories t LEFT JOIN turns u ON u.trajectory_id = t.id "
            "AND u.role = 'assistant' AND u.calls IS NOT NULL WHERE t.run_id = ? AND t.abort_reason IS NULL", [run_id]):
        step_of[traj_id] = step
        well_formed = calls is not None and any(c.get("error") is None for c in orjson.loads(calls))
        made[traj_id] = made.get(traj_id, False) or well_formed
    return _share_by_step((step, made[traj_id]) for traj_id, step in step_of.items())


def episode_summaries(store: Store, runs: list[RunSeries]) -> dict[int, dict]:
    """Per run that is not a training run (simulate, eval): its episodes' final rewards by value,
    end and abort reasons, mean turns of each kind and mean tokens of each part of the policy's
    context. Runs without episodes are left out."""
    out = {}
    for run in runs:
        if run.kind == "train":
            continue
        rows = list(store.db.query(
            "SELECT final_reward, end_reason, abort_reason, assistant_turns, tool_turns, user_turns, prompt_tokens, "
            "policy_tokens, total_tokens FROM trajectories WHERE run_id = ?", [run.id]))
        if not rows:
            continue
        finished = [r for r in rows if r["abort_reason"] is None]
        rewards: dict[str, int] = {}
        for r in finished:
            key = f"{r['final_reward']:g}"
            rewards[key] = rewards.get(key, 0) + 1
        ends: dict[str, int] = {}
        for r in rows:
            key = f"aborted: {r['abort_reason']}" if r["abort_reason"] else r["end_reason"]
            ends[key] = ends.get(key, 0) + 1
        n = len(rows)
        out[run.id] = {
            "episodes": n, "rewards": dict(sorted(rewards.items(), key=lambda kv: float(kv[0]))), "ends": ends,
            "turns": {kind: sum(r[f"{kind}_turns"] for r in rows) / n for kind in ("assistant", "tool", "user")},
            "tokens": {"prompt": sum(r["prompt_tokens"] for r in rows) / n,
                       "policy": sum(r["policy_tokens"] for r in rows) / n,
                       "user and tools": sum(r["total_tokens"] - r["prompt_tokens"] - r["policy_tokens"]
                                             for r in rows) / n}}
    return out


def sample_steps(steps: list[int], count: int) -> list[int]:
    """`count` steps spread evenly over a run, the first and the last included (0: all)."""
    if count <= 0 or count >= len(steps):
        return list(steps)
    if count == 1:
        return [steps[-1]]
    picks = {steps[round(i * (len(steps) - 1) / (count - 1))] for i in range(count)}
    return sorted(picks)


def episodes(store: Store, run: RunSeries, steps: list[int] | None) -> list[dict]:
    """The tasks of a run (of the given steps; all when None) with their rollouts and turns, for
    the trajectory browser."""
    where, params = "run_id = ?", [run.id]
    if steps is not None:
        where += f" AND step IN ({', '.join('?' * len(steps))})"
        params += steps
    row = store.db.execute("SELECT tool_names FROM runs WHERE id = ?", [run.id]).fetchone()
    names = orjson.loads(row[0]) if row and row[0] else {}  # the tools are shown under their sources' names
    tasks = {(r["step"], r["task_index"]): _task(r, names) for r in store.db.query(
        f"SELECT * FROM tasks WHERE {where} ORDER BY step, task_index", params)}
    trajectories = list(store.db.query(f"SELECT * FROM trajectories WHERE {where} ORDER BY step, task_index, "
                                       "rollout_index", params))
    turns: dict[int, list[dict]] = {}
    if trajectories:
        ids = [t["id"] for t in trajectories]
        for row in store.db.query(f"SELECT * FROM turns WHERE trajectory_id IN ({', '.join('?' * len(ids))}) "
                                  "ORDER BY trajectory_id, turn_index", ids):
            turns.setdefault(row["trajectory_id"], []).append(row)
    updated = {step for step, loss in zip(run.steps, run.figures.get("loss", [])) if loss is not None}
    kl = (run.recipe.get("train") or {}).get("kl_coef") or 0
    for t in trajectories:
        task = tasks.setdefault((t["step"], t["task_index"]), {"task_index": t["task_index"], "step": t["step"],
                                                               "status": "unrecorded"})
        # the update used a rollout's tokens: its step made an update, and it had an advantage (or a KL term)
        trained = (t["step"] in updated and t["abort_reason"] is None and t["advantage"] is not None
                   and (t["advantage"] != 0 or kl > 0))
        task.setdefault("rollouts", []).append(_rollout(t, turns.get(t["id"], []), run.kind == "train", trained))
    return [{"run": run.id, **task} for task in tasks.values()]


def _task(row: dict, names: dict[str, str]) -> dict:
    task = {k: row[k] for k in ("step", "task_index", "category", "level", "status", "failure", "user_intent",
                                 "user_persona", "first_user_query", "origin")}
    task["knobs"] = orjson.loads(row["knobs"])
    task["tools"] = [names.get(n, n) for n in orjson.loads(row["tools"])]
    task["expected_tool_calls"] = [names.get(n, n) for n in orjson.loads(row["expected_tool_calls"] or "[]")]
    return task


def _rollout(t: dict, turn_rows: list[dict], training: bool, trained: bool) -> dict:
    """A rollout: its verdict, advantage and turns; each assistant turn with the number of tokens
    the policy wrote in it; `training`: of a training run; `trained`: the step's update used them."""
    spans = turn_spans(decode_ints(t["policy_mask"] or b""))
    assistant = [row for row in turn_rows if row["role"] == "assistant"]
    lengths = [end - start for start, end in spans] if len(spans) == len(assistant) else [None] * len(assistant)
    lengths_iter = iter(lengths)
    turns = []
    for row in turn_rows:
        turn = {"role": row["role"], "content": row["content"], "reward": row["reward"],
                "calls": orjson.loads(row["calls"]) if row["calls"] else []}
        if row["role"] == "assistant":
            turn["tokens"] = next(lengths_iter)
            turn["turn_reward"] = row["turn_reward"]
        turns.append(turn)
    return {"rollout_index": t["rollout_index"], "final_reward": t["final_reward"], "advantage": t["advantage"],
            "end_reason": t["end_reason"], "abort_reason": t["abort_reason"],
            "verifier_reasoning": t["verifier_reasoning"], "policy_tokens": t["policy_tokens"],
            "training": training, "trained": trained, "turns": turns}
