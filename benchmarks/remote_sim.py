"""Simulation throughput: the simulator in-process (llama_cpp backend) vs behind llama.cpp's
OpenAI-compatible server with 1, 4 and 8 requests in flight.

    python benchmarks/remote_sim.py [--episodes 8] [--repeats 1]

Each configuration runs `simulate` on the same recipe (embedded model as policy and simulator)
and seed with a fresh database, so nothing comes from the cache. Prints episodes/minute and the
ratio to the in-process run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from trustee_lite.config import parse_recipe  # noqa: E402
from trustee_lite.lm.embedded import embedded_gguf  # noqa: E402
from trustee_lite.simulate import simulate  # noqa: E402
from trustee_lite.store import Store  # noqa: E402

BASE = {
    "name": "bench",
    "policy": {"model": "embedded", "max_new_tokens": 48, "max_response_tokens": 96, "batch_size": 8},
    "simulator": {"max_new_tokens": 160, "max_history_chars": 1500, "retries": 1},
    "rollout": {"rollouts_per_task": 4},
}


def start_server(port: int, threads: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()), "--host", "127.0.0.1",
         "--port", str(port), "--n_ctx", "4096", "--n_threads", str(threads)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(180):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2).read()
            return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("the llama.cpp server did not start")


def run(recipe_data: dict, episodes: int) -> dict:
    recipe = parse_recipe(recipe_data, "bench")
    with tempfile.TemporaryDirectory() as tmp, Store(Path(tmp) / "db.sqlite") as store:
        return asyncio.run(simulate(recipe, store, episodes, seed=0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    threads = os.cpu_count() or 1
    configs = [("in-process llama_cpp", {"backend": "llama_cpp", "model": "embedded"})]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for n in (1, 4, 8):
        configs.append((f"server, {n} in flight", {
            "backend": "openai", "base_url": f"http://127.0.0.1:{port}/v1", "model": "smollm2",
            "response_format": "json_object", "max_in_flight": n}))
    server = start_server(port, threads)
    rows = []
    try:
        for label, sim in configs:
            rates, aborted = [], 0
            for _ in range(args.repeats):
                data = {**BASE, "simulator": {**BASE["simulator"], **sim}}
                summary = run(data, args.episodes)
                rates.append(summary["episodes"] / summary["wall_s"] * 60)
                aborted += summary["aborted"]
            rows.append((label, statistics.median(rates), aborted))
            print(f"{label:<22} {rows[-1][1]:6.2f} episodes/min  (aborted {aborted})", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    base = rows[0][1]
    print(f"\n{'configuration':<22} {'episodes/min':>12} {'ratio':>6}")
    for label, rate, _ in rows:
        print(f"{label:<22} {rate:12.2f} {rate / base:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
