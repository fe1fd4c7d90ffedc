"""`export --to merged`: the base with the adapter merged in (PEFT merge_and_unload), saved as a
complete transformers folder that AutoModelForCausalLM loads and vLLM serves: the weights in the
base's dtype (a 4-bit base is loaded again from its full-precision weights, bf16), the tokenizer
with the chat template the policy trained with, a generation config that samples as the recipe
did, and `trustee_lite.json` (where it came from, the enable_thinking choice)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from trustee_lite.errors import UserError
from trustee_lite.export.fit import check_fits
from trustee_lite.export.source import ExportSource
from trustee_lite.progress import say

SIDECAR = "trustee_lite.json"


def export_merged(source: ExportSource, out: Path) -> dict:
    import torch
    from peft import PeftModel
    from transformers import GenerationConfig

    from trustee_lite.lm import hf_load

    start = time.perf_counter()
    policy = source.policy
    four_bit = policy.load_in_4bit
    base_cfg = policy.model_copy(update={"load_in_4bit": False, "device": "cpu",
                                         "dtype": "bfloat16" if four_bit else policy.dtype})
    say(f"loading the base {policy.model} on the CPU" + (" in bf16 (the run loaded it in 4 bits)" if four_bit else ""))
    loaded = hf_load.load(base_cfg, f"run {source.run_id}: policy")
    check_fits(source.adapter, loaded.model.config, policy.model)
    try:
        model = PeftModel.from_pretrained(loaded.model, str(source.adapter))
    except (ValueError, RuntimeError, KeyError) as err:
        raise UserError(str(source.adapter), f"does not fit the base {policy.model}: {hf_load.first_line(err)}") from None
    merged = model.merge_and_unload()
    eos = hf_load.eos_ids(loaded.tokenizer, merged)
    merged.generation_config = GenerationConfig(
        do_sample=policy.temperature > 0, temperature=policy.temperature if policy.temperature > 0 else None,
        top_p=policy.top_p if policy.temperature > 0 else None, max_new_tokens=policy.max_new_tokens,
        bos_token_id=getattr(merged.generation_config, "bos_token_id", None), eos_token_id=eos,
        pad_token_id=loaded.tokenizer.pad_token_id)
    out.mkdir(parents=True, exist_ok=True)
    with torch.no_grad():
        merged.save_pretrained(str(out), safe_serialization=True)
    loaded.tokenizer.save_pretrained(str(out))
    sidecar = {**source.record(), "dtype": str(next(merged.parameters()).dtype).removeprefix("torch.")}
    (out / SIDECAR).write_text(json.dumps(sidecar, indent=1), encoding="utf-8")
    size = sum(p.stat().st_size for p in out.glob("*.safetensors"))
    return {"to": "merged", "out": str(out.resolve()), "weights_mb": round(size / 2**20, 1), **sidecar,
            "wall_s": round(time.perf_counter() - start, 2)}
