"""Training steps of a multi-turn recipe with and without key/value reuse across policy turns.

    python benchmarks/kv_reuse.py [--steps 4] [--recipe benchmarks/multiturn.yaml] [--budget-mb 1024]
    python benchmarks/kv_reuse.py --policy-only [--repeat 2]

Runs `train` twice on the same recipe and seed, each in its own process with a fresh database
(nothing from the simulation cache) and output folder: first with `policy.kv_reuse_mb=0` (every
policy turn encodes the whole conversation again), then with the budget given. Prints, for
each, the median step time and its split (policy prefill and decode, simulation, update,
waiting), the prompt tokens encoded and reused per step, and the assistant turns per episode;
then the ratios with reuse / without.

--policy-only leaves the simulator out (on a CPU it shares the cores with the policy): the
policy's generation service alone plays 8 conversations of 4 turns, first-turn prompts of the
built-in tool pool, each later turn a user message of 22-69 words, 48 new tokens a turn, in
batches of 4 (episodes drift apart), with and without reuse, alternating, --repeat times each.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("wall_s", "policy_gen_s", "policy_prefill_s", "policy_decode_s", "simulation_s", "update_s", "other_s",
           "prefill_tokens", "reused_tokens")


def run(recipe: Path, steps: int, budget_mb: int, folder: Path) -> dict:
    db, out = folder / "db.sqlite", folder / "out"
    command = [sys.executable, "-m", "trustee_lite", "train", str(recipe), "--steps", str(steps), "--db", str(db),
               "--out", str(out), "--set", f"policy.kv_reuse_mb={budget_mb}"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines() + done.stderr.splitlines():
        if line.startswith("step ") and " | " in line and "level" in line:  # the summary lines, not the bars
            print(f"  [{budget_mb} MiB] {line}", flush=True)
    if done.returncode != 0:
        sys.exit(f"train failed ({done.returncode}):\n{done.stderr[-3000:]}")
    with sqlite3.connect(db) as conn:
        rows = conn.execute(f"SELECT {', '.join(FIGURES)} FROM steps ORDER BY step").fetchall()
        turns = conn.execute("SELECT avg(assistant_turns), min(assistant_turns), max(assistant_turns), "
                             "sum(assistant_turns >= 4), count(*) FROM trajectories WHERE step IS NOT NULL").fetchone()
    later = rows[1:] if len(rows) > 2 else rows  # the first step also warms the caches up
    figures = {name: statistics.median(r[i] for r in later) for i, name in enumerate(FIGURES)}
    figures["steps"] = [r[0] for r in rows]
    figures["turns"] = turns
    return figures


def policy_only(repeat: int, budget_mb: int) -> None:
    import random

    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from batching import QUERIES

    from trustee_lite import prompts
    from trustee_lite.config import PolicyConfig
    from trustee_lite.env.chat import PolicyChat
    from trustee_lite.env.pool.tools import load_pool
    from trustee_lite.lm import GenRequest, Sampling
    from trustee_lite.lm.hf import TransformersBackend
    from trustee_lite.lm.prefix_cache import PrefixCache

    backend = TransformersBackend(PolicyConfig(model="embedded", batch_size=8), "policy")
    chat, pool, rng = PolicyChat(backend.tokenizer), load_pool(), random.Random(0)
    firsts = [chat.first_prompt(prompts.policy_system_prompt(0), QUERIES[i % len(QUERIES)], list(pool.sample(3, rng)[1]))
              for i in range(8)]

    def play(budget: int) -> dict:
        backend.prefix_cache = PrefixCache(budget * 2**20) if budget else None
        conversation, seen = [list(p) for p in firsts], dict.fromkeys(("wall", "prefill", "decode", "fed", "reused"), 0.0)
        for turn in range(4):
            requests = [GenRequest(prompt_ids=tuple(p), logprobs=True, sampling=Sampling(48, 1.0, 1.0, seed=100 * turn + i))
                        for i, p in enumerate(conversation)]
            start, completions = time.perf_counter(), []
            for half in (requests[:4], requests[4:]):
                completions += backend.generate_batch(half)
                t = backend.times
                seen["prefill"] += t.prefill_s
                seen["decode"] += t.decode_s
                seen["fed"] += t.fed_tokens
                seen["reused"] += t.reused_tokens
            seen["wall"] += time.perf_counter() - start
            conversation = [p + list(c.token_ids) + chat.continuation(
                [chat.user_message("Please go on, and tell me more about it: " + "x " * (20 + 7 * i))], c.token_ids[-1])
                for i, (p, c) in enumerate(zip(conversation, completions))]
        return seen

    runs = {0: [], budget_mb: []}
    for _ in range(repeat):
        for budget in runs:
            runs[budget].append(play(budget))
            print(f"  reuse {budget} MiB: " + ", ".join(f"{k} {v:.1f}" for k, v in runs[budget][-1].items()), flush=True)
    med = {b: {k: statistics.median(r[k] for r in rs) for k in rs[0]} for b, rs in runs.items()}
    print("8 conversations x 4 turns, policy only (medians): reuse | wall s | prefill s | decode s | "
          "prompt tokens encoded | reused")
    for b, m in med.items():
        print(f"{b} MiB | {m['wall']:.1f} | {m['prefill']:.1f} | {m['decode']:.1f} | {m['fed']:.0f} | {m['reused']:.0f}")
    off, on = med[0], med[budget_mb]
    print(f"with / without | {on['wall'] / off['wall']:.2f}x | {on['prefill'] / off['prefill']:.2f}x | "
          f"{on['decode'] / off['decode']:.2f}x | {on['fed'] / off['fed']:.2f}x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--recipe", type=Path, default=ROOT / "benchmarks" / "multiturn.yaml")
    parser.add_argument("--budget-mb", type=int, default=1024, help="policy.kv_reuse_mb of the run with reuse")
    parser.add_argument("--policy-only", action="store_true", help="the policy's generation alone, no simulator")
    parser.add_argument("--repeat", type=int, default=2, help="--policy-only: runs each way")
    args = parser.parse_args()
    if args.policy_only:
        policy_only(args.repeat, args.budget_mb)
        return
    results = {}
    for budget in (0, args.budget_mb):
        with tempfile.TemporaryDirectory() as tmp:
            print(f"train {args.recipe.name}, {args.steps} steps, policy.kv_reuse_mb={budget}", flush=True)
            results[budget] = run(args.recipe, args.steps, budget, Path(tmp))
    off, on = results[0], results[args.budget_mb]
    print(f"\nmedians of steps {'2' if args.steps > 2 else '1'}-{args.steps} (step wall times: "
          f"without {off['steps']}, with {on['steps']})")
    header = ("reuse", "step s", "policy s", "prefill s", "decode s", "sim s", "update s", "waiting s",
              "prompt tok encoded", "prompt tok reused", "assistant turns/episode")
    print(" | ".join(header))
    for name, r in (("off", off), (f"{args.budget_mb} MiB", on)):
        mean_turns, low, high, four, n = r["turns"]
        print(" | ".join([name, *(f"{r[k]:.1f}" for k in FIGURES[:7]), f"{r['prefill_tokens']:.0f}",
                          f"{r['reused_tokens']:.0f}", f"{mean_turns:.2f} ({low}-{high}; {four} of {n} with >= 4)"]))
    print(" | ".join(["with / without", *(f"{on[k] / off[k]:.2f}x" if off[k] else "-" for k in FIGURES[:7]),
                      f"{on['prefill_tokens'] / off['prefill_tokens']:.2f}x" if off["prefill_tokens"] else "-"]))


if __name__ == "__main__":
    main()
