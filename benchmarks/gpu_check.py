"""The GPU check of the generation path, one phase per call; gpu_check.sh runs the phases in order,
each under its own timeout, and every phase adds its figures to one JSON file as it goes (a
phase cut short by its timeout keeps what it measured).

    python benchmarks/gpu_check.py PHASE --work DIR --out FILE [--tiny] [--tokenizer DIR]

  model    a stand-in of Qwen3-8B (random bf16 weights in Qwen3's architecture, the real Qwen2
           vocabulary with Qwen3's added tokens and published template from --tokenizer), saved
           to DIR/model; --tiny: 2 layers, the embedded model's tokenizer, fp32
  decode   tokens/s through the project's transformers backend, compiled (static caches) and eager
           (today's path: the "before"), at batch 1, 32 and 8, NF4 then bf16 (--tiny: fp32,
           eager at batch 1 and 4), beside the bandwidth floor (weight bytes / measured copy
           bandwidth)
  train    `train` on a desktop-shaped recipe for 2 steps (2 tasks x 4 rollouts, policy 128 new
           tokens, simulator 256), compiled then eager: each step's time split, policy tokens/s,
           GPU utilisation and memory from the steps table, and `check`'s estimate for it (--tiny:
           eager alone, 2 x 2 episodes of 32 and 96 tokens)
  mixed    policy and simulator rows in one batch (mixed_batches) against a batch of each
  table    print the figures gathered so far
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from gpu_step import QWEN3_8B, TINY, copy_bandwidth, weight_bytes  # noqa: E402

QWEN3_TOKENS = ("<think>", "</think>", "<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
PROMPT, NEW = 128, 64  # decode table: prompt and new tokens a row


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def save(path: Path, result: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(path)


def stand_in(work: Path, tiny: bool, tokenizer_dir: str | None) -> Path:
    import torch
    from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    folder = work / "model"
    if tokenizer_dir:  # prepared by gpu_check.sh --prepare: the Qwen2 vocabulary, Qwen3's tokens and template
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    else:  # the embedded model's tokenizer (ChatML, as Qwen's) with Qwen3's tokens and this project's template
        from trustee_lite.config import PolicyConfig
        from trustee_lite.lm.hf_load import load as load_model

        tok = load_model(PolicyConfig(), "stand-in").tokenizer
        tok.add_tokens(list(QWEN3_TOKENS))
        tok.chat_template = (ROOT / "tests" / "templates" / "qwen3.jinja").read_text()
    arch = dict(TINY if tiny else QWEN3_8B)
    arch["vocab_size"] = max(arch["vocab_size"], 64 * -(-len(tok) // 64))
    eos, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")
    config = Qwen3Config(**arch, eos_token_id=eos, pad_token_id=pad)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32 if tiny else torch.bfloat16)  # no fp32 copy of 8B weights first
    with torch.device("cpu" if tiny else "cuda"):
        model = Qwen3ForCausalLM(config)
    torch.set_default_dtype(previous)
    model.generation_config = GenerationConfig(eos_token_id=[eos], pad_token_id=pad)
    model.save_pretrained(folder)
    tok.eos_token, tok.pad_token = "<|im_end|>", "<|endoftext|>"
    tok.save_pretrained(folder)
    return folder


def backend(folder: Path, tiny: bool, dtype: str, decode: str, batch: int, **more):
    from trustee_lite.config import PolicyConfig
    from trustee_lite.lm.hf import TransformersBackend

    cfg = PolicyConfig(model=str(folder), load_in_4bit=dtype == "nf4", dtype="float32" if tiny else "bfloat16",
                       device="cpu" if tiny else "cuda", decode=decode, batch_size=batch, unsloth=False,
                       static_cache_tokens=256, kv_reuse_mb=0, **more)
    return TransformersBackend(cfg, "gpu check")


def requests(model_backend, rows: int, new: int, adapter: bool = True, seed: int = 0):
    import random

    from trustee_lite.lm import GenRequest, Sampling

    rng = random.Random(seed)
    top = len(model_backend.tokenizer) - 300  # ordinary tokens, no special ones
    return [GenRequest(prompt_ids=tuple(rng.randrange(top) for _ in range(PROMPT)), adapter=adapter,
                       sampling=Sampling(new, 1.0, 1.0, seed=seed + row)) for row in range(rows)]


def timed(model_backend, batch) -> tuple[float, int]:
    from trustee_lite.lm import GenerationError

    start = time.perf_counter()
    done = model_backend.generate_batch(batch)
    spent = time.perf_counter() - start
    failed = [d for d in done if isinstance(d, GenerationError)]
    if failed:
        raise RuntimeError(str(failed[0]))
    return spent, sum(d.num_tokens for d in done)


def sync_free():
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def phase_decode(args, result: dict, folder: Path) -> None:
    kinds = ["fp32"] if args.tiny else ["nf4", "bf16"]
    table = result.setdefault("decode", {})
    for dtype in kinds:
        # the compiled "after" first; eager is today's path. Tiny (a test): eager alone, as compiling
        # costs a minute on a CPU (tests/test_compiled_decode.py compiles the embedded model)
        for mode in ("eager",) if args.tiny else ("compiled", "eager"):
            sizes = (1, 4) if args.tiny else (1, 32, 8)
            model_backend = backend(folder, args.tiny, dtype, mode, max(sizes))
            if mode == "eager" and dtype == kinds[0]:
                bandwidth = copy_bandwidth("cpu" if args.tiny else "cuda")
                weights = weight_bytes(model_backend.model)
                result["floor"] = {"weight_gib": round(weights / 2**30, 3), "copy_gbs": round(bandwidth / 1e9, 1),
                                   "tokens_s_batch1": round(bandwidth / weights, 1), "dtype": dtype}
            for rows in sizes:
                first, _ = timed(model_backend, requests(model_backend, rows, 8))  # compiles the bucket when compiled
                runs = []
                while len(runs) < 3 and sum(s for s, _ in runs) < (10 if args.tiny else 20):
                    runs.append(timed(model_backend, requests(model_backend, rows, NEW, seed=len(runs) + 1)))
                rate = statistics.median(n / s for s, n in runs)
                table.setdefault(f"{dtype} {mode}", {})[str(rows)] = {"tokens_s": round(rate, 1),
                                                                       "first_call_s": round(first, 1)}
                save(args.out, result)
                print(f"{dtype} {mode} batch {rows}: {rate:.1f} tokens/s (first call {first:.1f} s)", flush=True)
            model_backend.close()
            del model_backend
            sync_free()


def desktop_recipe(args, folder: Path) -> Path:
    import yaml

    data = yaml.safe_load((ROOT / "recipes" / "desktop-24gb.yaml").read_text())
    data["policy"]["unsloth"] = False  # the decoding measured is the project's
    for section in ("policy", "simulator"):
        data[section]["model"] = str(folder)
        if args.tiny:
            data[section].update(load_in_4bit=False, device="cpu", dtype="float32")
    data["policy"]["max_new_tokens"], data["simulator"]["max_new_tokens"] = (32, 96) if args.tiny else (128, 256)
    data["train"].update(steps=2, tasks_per_step=2, checkpoint_every=1)
    data["rollout"]["rollouts_per_task"] = 2 if args.tiny else 4
    path = args.work / "desktop-2-steps.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


STEP_COLUMNS = ("step", "wall_s", "policy_gen_s", "policy_prefill_s", "policy_decode_s", "simulation_s", "update_s",
                "checkpoint_s", "other_s", "compile_s", "policy_tokens", "simulator_tokens", "episodes", "aborted",
                "gpu_util", "gpu_mem_gib")


def phase_train(args, result: dict, folder: Path) -> None:
    recipe = desktop_recipe(args, folder)
    gpu = ["--gpu", "24"] if args.tiny else []
    check = subprocess.run([sys.executable, "-m", "trustee_lite", "check", str(recipe), *gpu], capture_output=True,
                           text=True, cwd=ROOT)
    memory = [line for line in check.stdout.splitlines() if line.startswith("memory")]
    result.setdefault("train", {})["check_memory"] = memory[0] if memory else check.stderr.strip()[-300:]
    save(args.out, result)
    for mode in ("eager",) if args.tiny else ("compiled", "eager"):  # tiny: compiling is the decode phase's
        db, out = args.work / f"train-{mode}.sqlite", args.work / f"run-{mode}"
        start = time.perf_counter()
        run = subprocess.run([sys.executable, "-m", "trustee_lite", "train", str(recipe), "--db", str(db), "--out",
                              str(out), "--fresh", "--set", f"policy.decode={mode}"], cwd=ROOT, capture_output=True,
                             text=True)
        print(run.stdout[-2000:], run.stderr[-2000:], sep="\n", flush=True)
        steps = []
        if db.is_file():
            with sqlite3.connect(db) as conn:
                conn.row_factory = sqlite3.Row
                present = {r[1] for r in conn.execute("PRAGMA table_info(steps)")}
                steps = [{c: row[c] for c in STEP_COLUMNS if c in present}
                         for row in conn.execute("SELECT * FROM steps ORDER BY step")]
        gen = sum(s["policy_gen_s"] for s in steps)
        result["train"][mode] = {
            "exit": run.returncode, "seconds": round(time.perf_counter() - start, 1), "steps": steps,
            "policy_tokens_s": round(sum(s["policy_tokens"] for s in steps) / gen, 1) if gen else None,
            "gpu_util_mean": _mean([s.get("gpu_util") for s in steps]),
            "gpu_mem_gib_max": max((s.get("gpu_mem_gib") or 0 for s in steps), default=None),
        }
        save(args.out, result)


def _mean(values):
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 1) if values else None


def phase_mixed(args, result: dict, folder: Path) -> None:
    import torch

    from trustee_lite.config import LoraConfig

    rows = 2 if args.tiny else 8
    model_backend = backend(folder, args.tiny, "fp32" if args.tiny else "nf4", "eager", 2 * rows, mixed_batches=True)
    model = model_backend.attach_lora(LoraConfig(rank=16, alpha=32), False)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.01)
    model.eval()
    on, off = requests(model_backend, rows, NEW, True, 1), requests(model_backend, rows, NEW, False, 2)
    timed(model_backend, on[:1] + off[:1])  # warm-up
    apart = [timed(model_backend, on), timed(model_backend, off)]
    together = timed(model_backend, on + off)
    rate_apart = sum(n for _, n in apart) / sum(s for s, _ in apart)
    result["mixed"] = {"rows_each": rows, "apart_tokens_s": round(rate_apart, 1),
                       "together_tokens_s": round(together[1] / together[0], 1),
                       "ratio": round(together[1] / together[0] / rate_apart, 2)}
    save(args.out, result)


def table(result: dict) -> str:
    lines = [f"device {result.get('device')}  (tiny: {result.get('tiny')})"]
    if "floor" in result:
        f = result["floor"]
        lines.append(f"weights {f['weight_gib']} GiB {f['dtype']}, copy {f['copy_gbs']} GB/s: floor "
                     f"{f['tokens_s_batch1']} tokens/s at batch 1")
    for kind, cells in result.get("decode", {}).items():
        row = "  ".join(f"b{b} {c['tokens_s']:>8} ({c['first_call_s']} s first)" for b, c in cells.items())
        lines.append(f"decode {kind:<14} {row}")
    train = result.get("train", {})
    if "check_memory" in train:
        lines.append(f"check: {train['check_memory']}")
    for mode in ("compiled", "eager"):
        if mode in train:
            t = train[mode]
            gpu = f"GPU {t['gpu_util_mean']}% busy, {t['gpu_mem_gib_max']} GiB" if t["gpu_util_mean"] else "no GPU"
            lines.append(f"train {mode}: exit {t['exit']}, {t['seconds']} s, policy {t['policy_tokens_s']} tokens/s, {gpu}")
            for s in t["steps"]:
                lines.append("  " + " ".join(f"{k} {v}" for k, v in s.items()))
    if "mixed" in result:
        m = result["mixed"]
        lines.append(f"mixed batch of {m['rows_each']}+{m['rows_each']}: {m['together_tokens_s']} tokens/s, apart "
                     f"{m['apart_tokens_s']}: x{m['ratio']}")
    for name, phase in result.get("phases", {}).items():
        lines.append(f"phase {name}: exit {phase['exit']} in {phase['seconds']} s")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("phase", choices=["model", "decode", "train", "mixed", "table"])
    parser.add_argument("--work", type=Path, default=Path("runs/gpu_check/work"))
    parser.add_argument("--out", type=Path, default=Path("runs/gpu_check/gpu_check.json"))
    parser.add_argument("--tiny", action="store_true", help="a tiny stand-in on the CPU, no NF4: checks the code")
    parser.add_argument("--tokenizer", help="the prepared Qwen3 tokenizer folder (gpu_check.sh --prepare)")
    args = parser.parse_args()
    result = load(args.out)
    if args.phase == "table":
        print(table(result))
        return 0
    import torch

    if not args.tiny and not torch.cuda.is_available():
        print("gpu_check.py: no CUDA device (use --tiny for a CPU check of the code)", file=sys.stderr)
        return 2
    result.update(device=torch.cuda.get_device_name(0) if not args.tiny else "cpu", tiny=args.tiny,
                  versions=_versions())
    args.work.mkdir(parents=True, exist_ok=True)
    folder = args.work / "model"
    if args.phase == "model":
        stand_in(args.work, args.tiny, args.tokenizer)
    else:
        {"decode": phase_decode, "train": phase_train, "mixed": phase_mixed}[args.phase](args, result, folder)
    save(args.out, result)
    return 0


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "llguidance"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:  # bitsandbytes is absent on a CPU machine
            continue
    return found


if __name__ == "__main__":
    sys.exit(main())
