"""Does the CPU recipe learn from the user's own tasks? Training against the same recipe with
learning_rate 0 (every update computed, the adapter never moves), for each seed.

    python benchmarks/own_tasks.py [--recipe recipes/cpu-tasks.yaml] [--seeds 0 1] [--steps 10]
                                   [--work DIR] [--json FILE]

Runs `train` once per (seed, learning rate) in its own process, in one database (a control run
meets the simulator answers its twin already paid for, as a re-run would). Prints, per step and
run, the mean reward, the valid-call rate (episodes with at least one well-formed tool call, as
the report counts them) and the share of groups whose rollouts scored unequally (the only groups
GRPO learns from); then, per seed, the mean over the last 5 steps of each and the difference
trained - control.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trustee_lite.config import load_recipe  # noqa: E402
from trustee_lite.report.data import valid_call_rates  # noqa: E402
from trustee_lite.store import Store  # noqa: E402

LAST = 5


def train(recipe: str, seed: int, lr: float, steps: int, db: Path, out: Path) -> tuple[int, float]:
    """One run in its own process: its run id and wall seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "trustee_lite", "train", recipe, "--seed", str(seed), "--steps", str(steps),
                           "--set", f"train.learning_rate={lr}", "--db", str(db), "--out", str(out), "--fresh"],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"train (seed {seed}, learning rate {lr}) exited {done.returncode}")
    return json.loads(done.stdout.strip().splitlines()[-1])["run_id"], time.perf_counter() - start


def per_step(store: Store, run_id: int) -> list[dict]:
    rates = valid_call_rates(store, run_id)
    groups: dict[tuple[int, int], set] = {}
    for step, task, reward in store.db.execute("SELECT step, task_index, final_reward FROM trajectories "
                                               "WHERE run_id = ? AND abort_reason IS NULL", [run_id]):
        groups.setdefault((step, task), set()).add(reward)
    rows = []
    for step, reward in store.db.execute("SELECT step, mean_reward FROM steps WHERE run_id = ? ORDER BY step", [run_id]):
        mine = [len(r) > 1 for (s, _), r in groups.items() if s == step]
        rows.append({"step": step, "mean_reward": reward, "valid_call_rate": rates.get(step),
                     "unequal_groups": sum(mine) / len(mine) if mine else None})
    return rows


def last_mean(rows: list[dict], key: str) -> float | None:
    values = [r[key] for r in rows[-LAST:] if r[key] is not None]
    return statistics.fmean(values) if values else None


def fmt(value: float | None) -> str:
    return "    -" if value is None else f"{value:+.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipe", default="recipes/cpu-tasks.yaml")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--steps", type=int, default=None, help="default: the recipe's train.steps")
    parser.add_argument("--work", default=None, help="folder for the database and runs (default: a new temporary one)")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    args = parser.parse_args()
    recipe = load_recipe(str(ROOT / args.recipe), [])
    steps = args.steps or recipe.train.steps
    work = Path(args.work or tempfile.mkdtemp(prefix="own-tasks-"))
    work.mkdir(parents=True, exist_ok=True)
    db = work / "db.sqlite"
    results = []
    for seed in args.seeds:
        for lr in (recipe.train.learning_rate, 0.0):
            run_id, wall = train(args.recipe, seed, lr, steps, db, work / f"seed{seed}-lr{lr:g}")
            with Store(db) as store:
                rows = per_step(store, run_id)
            results.append({"seed": seed, "learning_rate": lr, "run_id": run_id, "wall_s": round(wall, 1), "steps": rows})
            print(f"seed {seed}, learning rate {lr:g}: {wall:.0f} s", flush=True)
            print("  step  mean reward  valid-call rate  unequal groups")
            for r in rows:
                print(f"  {r['step']:4d}  {fmt(r['mean_reward']):>11}  {fmt(r['valid_call_rate']):>15}  {fmt(r['unequal_groups']):>14}")
    print(f"\nlast {LAST} steps, mean per step (trained - control):")
    for seed in args.seeds:
        trained, control = [r for r in results if r["seed"] == seed]
        parts = []
        for key in ("mean_reward", "valid_call_rate", "unequal_groups"):
            a, b = last_mean(trained["steps"], key), last_mean(control["steps"], key)
            parts.append(f"{key.replace('_', ' ')} {fmt(a)} vs {fmt(b)} ({fmt(None if a is None or b is None else a - b)})")
        print(f"seed {seed}: " + "; ".join(parts))
    print(f"total {sum(r['wall_s'] for r in results):.0f} s for {len(results)} runs of {steps} steps")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
