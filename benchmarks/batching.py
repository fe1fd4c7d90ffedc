"""Batching service vs one at a time: the same 16 concurrent policy generations.

    python benchmarks/batching.py [--requests 16] [--tokens 64] [--repeats 3]

Transformers backend, embedded SmolLM2-135M-Instruct. Two workloads:
  policy  first-turn policy prompts (system prompt, tool block, user query: ~500 tokens), where
          prefill dominates: prefill is compute-bound on a CPU and gains nothing from batching;
  short   one-line chat prompts, where decoding dominates and batching pays.
Per-row seeds make both modes produce the same tokens, so the comparison is like for like (the
script counts identical outputs). Prints median wall times and the ratio for each workload.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

from trustee_lite import prompts  # noqa: E402
from trustee_lite.config import PolicyConfig  # noqa: E402
from trustee_lite.env.chat import PolicyChat  # noqa: E402
from trustee_lite.env.pool.tools import load_pool  # noqa: E402
from trustee_lite.lm import GenerationService, GenRequest, Sampling, build_backend  # noqa: E402

QUERIES = [
    "Can you find me a flight from Boston to Denver next Friday?", "What's the weather in Lisbon tomorrow?",
    "Remind me to call the dentist at 3pm.", "How much is 200 euros in yen?", "Order my usual pizza please.",
    "Turn the living room lights down a bit.", "Any good sushi places near me?", "Email Sam that I'm running late.",
]


def short_requests(n: int, tokens: int) -> list[GenRequest]:
    return [GenRequest(messages=({"role": "user", "content": QUERIES[i % len(QUERIES)]},),
                       sampling=Sampling(tokens, 1.0, 1.0, seed=i), logprobs=True) for i in range(n)]


def build_requests(backend, n: int, tokens: int) -> list[GenRequest]:
    chat = PolicyChat(backend.tokenizer)
    pool = load_pool()
    rng = random.Random(0)
    requests = []
    for i in range(n):
        _, tools = pool.sample(2, rng)
        ids = chat.first_prompt(prompts.policy_system_prompt(0), QUERIES[i % len(QUERIES)], tools)
        requests.append(GenRequest(prompt_ids=tuple(ids), sampling=Sampling(tokens, 1.0, 1.0, seed=i), logprobs=True))
    return requests


async def batched(backend, requests, max_batch):
    async with GenerationService(backend, max_batch=max_batch, max_wait_s=0.05) as service:
        start = time.perf_counter()
        results = await asyncio.gather(*(service.generate(r) for r in requests))
        return time.perf_counter() - start, results, service.stats.batches


async def sequential(backend, requests):
    async with GenerationService(backend, max_batch=1, max_wait_s=0.0) as service:
        start = time.perf_counter()
        results = [await service.generate(r) for r in requests]
        return time.perf_counter() - start, results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    load_start = time.perf_counter()
    backend = build_backend("transformers", PolicyConfig(batch_size=args.requests), "policy")
    print(f"model load: {time.perf_counter() - load_start:.1f} s  (torch threads: {__import__('torch').get_num_threads()})")
    workloads = {"policy": build_requests(backend, args.requests, args.tokens),
                 "short": short_requests(args.requests, args.tokens)}
    for name, requests in workloads.items():
        compare(name, backend, requests, args)


def compare(name: str, backend, requests: list[GenRequest], args) -> None:
    lens = [len(r.prompt_ids) if r.prompt_ids else len(backend.encode_messages(r.messages)) for r in requests]
    print(f"\n[{name}] {len(requests)} requests, prompts {min(lens)}-{max(lens)} tokens, up to {args.tokens} new tokens each")
    batch_times, seq_times = [], []
    for repeat in range(args.repeats):
        t_batch, batch_results, n_batches = asyncio.run(batched(backend, requests, len(requests)))
        t_seq, seq_results = asyncio.run(sequential(backend, requests))
        same = sum(a.token_ids == b.token_ids for a, b in zip(batch_results, seq_results))
        tokens = sum(r.num_tokens for r in batch_results)
        batch_times.append(t_batch)
        seq_times.append(t_seq)
        print(f"  repeat {repeat + 1}: batched {t_batch:6.2f} s in {n_batches} batch(es), one at a time {t_seq:6.2f} s, "
              f"{tokens} tokens, identical outputs {same}/{len(requests)}")
    med_b, med_s = statistics.median(batch_times), statistics.median(seq_times)
    print(f"  median batched:       {med_b:6.2f} s  ({tokens / med_b:6.1f} generated tokens/s)")
    print(f"  median one at a time: {med_s:6.2f} s  ({tokens / med_s:6.1f} generated tokens/s)")
    print(f"  [{name}] speed-up (one at a time / batched): {med_s / med_b:.2f}x")


if __name__ == "__main__":
    main()
