"""The consumer-GPU path, measured with no download: a randomly initialised model with Qwen3-8B's
architecture, loaded in 4 bits (bitsandbytes NF4), serving as simulator (adapter off) and as the
base of the LoRA policy (adapter on).

    python benchmarks/gpu_step.py [--out runs/gpu_step.json] [--micro-batch 2]
    python benchmarks/gpu_step.py --tiny      # the same code on a tiny model, on the CPU (a check)

Measures
  (a) batched greedy decoding, tokens/s at batch 1, 8 and 32 (fixed prompt and output lengths),
      next to the bandwidth floor: 4-bit weight bytes / measured device copy bandwidth per step;
  (b) one GRPO LoRA update (trustee_lite's learner) on 8 sequences of 2048 tokens with gradient
      checkpointing: seconds and peak memory (torch.cuda.max_memory_allocated);
  (c) the same with an adapter-off (simulator) generation interleaved: one base serves both.
Prints a table and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from trustee_lite.config import LoraConfig, TrainConfig  # noqa: E402
from trustee_lite.lm.base import Backend  # noqa: E402
from trustee_lite.lm.lora import attach_lora  # noqa: E402
from trustee_lite.train.grpo import Sample  # noqa: E402
from trustee_lite.train.learner import Learner  # noqa: E402

QWEN3_8B = dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8,
                intermediate_size=12288, vocab_size=151936, head_dim=128, max_position_embeddings=40960,
                rope_theta=1_000_000.0, tie_word_embeddings=False, rms_norm_eps=1e-6)
TINY = dict(QWEN3_8B, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=1024, head_dim=16)


class Holder(Backend):
    """The part of a generation backend the learner uses."""

    def __init__(self, model):
        self.model = model

    def attach_lora(self, lora, gradient_checkpointing):
        self.model = attach_lora(self.model, lora, gradient_checkpointing)
        return self.model


def build(tiny: bool, folder: Path):
    from transformers import AutoModelForCausalLM, Qwen3Config, Qwen3ForCausalLM

    config = Qwen3Config(**(TINY if tiny else QWEN3_8B))
    torch.manual_seed(0)
    if tiny:
        return Qwen3ForCausalLM(config).eval()
    from trustee_lite.lm.quant import bnb_4bit_config

    # Random bf16 weights on the GPU, saved once, then loaded as bitsandbytes quantises on load.
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(config)
    torch.set_default_dtype(previous)
    model.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=bnb_4bit_config("benchmark"),
                                                device_map={"": 0}, dtype=torch.bfloat16).eval()


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def weight_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))


def copy_bandwidth(device: str) -> float:
    """Bytes per second moved by a large device-to-device copy (read + write)."""
    size = (1 << 30) if device == "cuda" else (1 << 26)
    src = torch.empty(size, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    sync()
    start = time.perf_counter()
    for _ in range(10):
        dst.copy_(src)
    sync()
    return 2 * size * 10 / (time.perf_counter() - start)


def decode(model, batch: int, prompt: int, new: int, vocab: int, device: str, adapter: bool = True) -> float:
    ids = torch.randint(0, vocab, (batch, prompt), device=device)
    ctx = model.disable_adapter() if not adapter and hasattr(model, "disable_adapter") else _null()
    with torch.inference_mode(), ctx:
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False, pad_token_id=0)  # warm-up
        sync()
        start = time.perf_counter()
        model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, pad_token_id=0)
        sync()
    return batch * new / (time.perf_counter() - start)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def samples(learner, n: int, length: int, prompt: int, vocab: int, device: str) -> list[Sample]:
    """Random sequences; the policy part after `prompt`; old log-probs from the current model."""
    out = []
    for i in range(n):
        ids = torch.randint(0, vocab, (1, length), device=device)
        with torch.no_grad():
            logp = learner._logprobs(ids, torch.ones_like(ids))[0].float().cpu()
        mask = (0,) * prompt + (1,) * (length - prompt)
        out.append(Sample(tuple(ids[0].tolist()), mask, (0.0, *logp.tolist()), 1.0 if i % 2 == 0 else -1.0))
    return out


def lora_weights(model) -> dict:
    return {k: v.detach().float().clone() for k, v in model.state_dict().items() if "lora_B" in k}


def peak_gib() -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a tiny random Qwen3 on the CPU: checks the code paths")
    parser.add_argument("--out", default="runs/gpu_step.json")
    parser.add_argument("--micro-batch", type=int, default=2)
    parser.add_argument("--seq", type=int, default=None, help="sequence length of the GRPO step (default 2048)")
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        print("gpu_step.py: no CUDA device (use --tiny for a CPU check of the code)", file=sys.stderr)
        return 2
    device = "cpu" if args.tiny else "cuda"
    seq = args.seq or (64 if args.tiny else 2048)
    prompt_len, new = (16, 16) if args.tiny else (128, 128)
    arch = TINY if args.tiny else QWEN3_8B
    result: dict = {"device": torch.cuda.get_device_name(0) if device == "cuda" else "cpu", "tiny": args.tiny}

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        model = build(args.tiny, Path(tmp))
        result["load_s"] = round(time.perf_counter() - start, 1)
    result["weight_gib"] = round(weight_bytes(model) / 2**30, 3)
    bandwidth = copy_bandwidth(device)
    floor_step_s = weight_bytes(model) / bandwidth
    result["copy_bandwidth_gbs"] = round(bandwidth / 1e9, 1)
    result["bandwidth_floor_tokens_s_batch1"] = round(1 / floor_step_s, 1)

    # (a) decode throughput, base model
    result["decode_tokens_s"] = {b: round(decode(model, b, prompt_len, new, arch["vocab_size"], device), 1) for b in (1, 8, 32)}
    result["decode_ratio_32_vs_1"] = round(result["decode_tokens_s"][32] / result["decode_tokens_s"][1], 2)

    # (b) one GRPO LoRA step on 8 x seq tokens, gradient checkpointing, through the project's learner
    lora = LoraConfig(rank=16, alpha=32)
    train = TrainConfig(learning_rate=1e-4, kl_coef=0.001, micro_batch_size=args.micro_batch, gradient_checkpointing=True)
    learner = Learner(Holder(model), lora, train, temperature=1.0, seed=0)
    model = learner.model
    batch = samples(learner, 8, seq, seq // 4, arch["vocab_size"], device)
    before = lora_weights(model)
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    sync()
    start = time.perf_counter()
    stats = learner.update(batch, 1)
    sync()
    after = lora_weights(model)
    result["grpo_step"] = {
        "sequences": 8, "tokens_each": seq, "micro_batch": args.micro_batch, "seconds": round(time.perf_counter() - start, 2),
        "peak_gib": None if peak_gib() is None else round(peak_gib(), 2), "loss": stats.loss,
        "loss_finite": stats.loss is not None and math.isfinite(stats.loss),
        "adapter_changed": any(not torch.equal(before[k], after[k]) for k in before),
    }

    # (c) a simulator call (adapter off) between two updates on the same weights
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sim_tokens_s = decode(model, 8, prompt_len, new, arch["vocab_size"], device, adapter=False)
    start = time.perf_counter()
    stats2 = learner.update(batch, 2)
    sync()
    ids = torch.randint(0, arch["vocab_size"], (1, 32), device=device)
    with torch.inference_mode():
        on = model(input_ids=ids).logits.float()
        with model.disable_adapter():
            off = model(input_ids=ids).logits.float()
    result["interleaved"] = {
        "simulator_decode_tokens_s_batch8": round(sim_tokens_s, 1), "step_seconds": round(time.perf_counter() - start, 2),
        "peak_gib": None if peak_gib() is None else round(peak_gib(), 2), "loss": stats2.loss,
        "adapter_on_vs_off_max_logit_diff": round(float((on - off).abs().max()), 4),
    }

    print(f"device {result['device']}  weights {result['weight_gib']} GiB  load {result['load_s']} s")
    print(f"copy bandwidth {result['copy_bandwidth_gbs']} GB/s -> floor {result['bandwidth_floor_tokens_s_batch1']} tokens/s at batch 1")
    print("batch  decode tokens/s")
    for b, v in result["decode_tokens_s"].items():
        print(f"{b:>5}  {v:>10}")
    print(f"batch 32 / batch 1: {result['decode_ratio_32_vs_1']}x")
    g = result["grpo_step"]
    print(f"GRPO step 8 x {seq}: {g['seconds']} s, peak {g['peak_gib']} GiB, loss {g['loss']}, adapter changed {g['adapter_changed']}")
    i = result["interleaved"]
    print(f"with a simulator call between: step {i['step_seconds']} s, peak {i['peak_gib']} GiB, "
          f"adapter on/off logits differ by {i['adapter_on_vs_off_max_logit_diff']}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
