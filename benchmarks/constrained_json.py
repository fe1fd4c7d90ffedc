"""Simulator answers with and without schema-constrained decoding on the transformers backend.

    python benchmarks/constrained_json.py [--episodes 16] [--max-new-tokens 320]

Runs `simulate` twice on the same recipe and seed, each with a fresh database (nothing from
the cache): the embedded model plays policy and simulator through transformers (one copy of
the weights), once with each role's JSON schema enforced by llguidance (json_constraint: true)
and once parsed defensively only (false). Prints, for each: simulator calls, answers that were
not JSON of the schema (parse failures), answers cut by the token limit, schema-valid answers
a role's own rule rejected, retries, aborted episodes by reason, and wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from trustee_lite.config import parse_recipe  # noqa: E402
from trustee_lite.simulate import simulate  # noqa: E402
from trustee_lite.store import Store  # noqa: E402


def recipe(constrained: bool, max_new_tokens: int) -> dict:
    return {
        "name": "constrained-json",
        "policy": {"model": "embedded", "max_new_tokens": 48, "max_response_tokens": 96, "batch_size": 16},
        "simulator": {"backend": "transformers", "model": "embedded", "max_new_tokens": max_new_tokens,
                      "batch_size": 16, "max_history_chars": 1500, "retries": 2, "json_constraint": constrained},
        "rollout": {"rollouts_per_task": 4},
    }


def run(constrained: bool, episodes: int, max_new_tokens: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "db.sqlite") as store:
        data = recipe(constrained, max_new_tokens)
        return asyncio.run(simulate(parse_recipe(data, "bench"), store, episodes, seed=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=320, help="per simulator answer")
    args = parser.parse_args()
    rows = []
    for constrained in (True, False):
        s = run(constrained, args.episodes, args.max_new_tokens)
        calls = s["cache_misses"]
        rows.append((("llguidance" if constrained else "none"), calls, s["simulator_parse_failures"], s["simulator_truncated"],
                     s["simulator_rejected"], s["simulator_retries"], s["aborted"], s["abort_reasons"], s["wall_s"]))
    print(f"simulate, {args.episodes} episodes, transformers simulator (embedded model), "
          f"{args.max_new_tokens} new tokens per answer, retries 2")
    print(f"{'constraint':<11}{'calls':>6}{'parse fail':>11}{'cut':>5}{'rejected':>9}{'retries':>8}{'aborted':>8}"
          f"  {'wall s':>7}  abort reasons")
    for name, calls, parse, cut, rejected, retries, aborted, reasons, wall in rows:
        print(f"{name:<11}{calls:>6}{parse:>11}{cut:>5}{rejected:>9}{retries:>8}{aborted:>8}  {wall:>7.1f}  {reasons}")


if __name__ == "__main__":
    main()
