"""`export --to gguf-lora` for the other families (Qwen 2, Qwen 3, Gemma 2): a tiny random model of
each (tests/model_families.py) written as a base GGUF file (tests/gguf_base.py), a PEFT adapter on
it from a training run in a database, exported; llama-cpp-python loads the base with and without
the exported LoRA, gives finite logits, the adapter moves them, and it moves them as transformers
+ PEFT does (the base GGUF itself computing what the transformers model does)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from gguf_base import write_base_gguf
from test_export import llama_scores

from trustee_lite.__main__ import main
from trustee_lite.config import load_recipe
from trustee_lite.store import Store

ROOT = Path(__file__).resolve().parents[1]
TEXTS = ["What's the weather in Paris?", "Book a table for two at 8 pm.", "<tool_call>\n{\"name\": \"get_stock_quote\"",
         "Summarise the news today."]


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One database for the three runs, and the smoke recipe they start from."""
    folder = tmp_path_factory.mktemp("export-families")
    return {"root": folder, "db": folder / "db.sqlite",
            "recipe": load_recipe(str(ROOT / "recipes" / "smoke.yaml"), []).model_dump(mode="json")}


def hf_rows(model, prompts):
    import torch

    with torch.no_grad():
        return [model(torch.tensor([p])).logits[0].numpy() for p in prompts]


def log_probs(rows):
    import numpy as np

    rows = np.concatenate(rows).astype(np.float64)
    rows = rows - rows.max(axis=-1, keepdims=True)
    return rows - np.log(np.exp(rows).sum(axis=-1, keepdims=True))


@pytest.mark.parametrize("family", ["qwen2", "qwen3", "gemma2"])
def test_gguf_lora_of_a_family_moves_llama_cpp_as_peft(family, family_dirs, family_tokenizers, shared, capsys):
    import numpy as np
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    folder, tokenizer = family_dirs[family], family_tokenizers[family]
    base_gguf = write_base_gguf(folder, shared["root"] / f"{family}.gguf", tokenizer).resolve()
    out = shared["root"] / family
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="eager")
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                            init_lora_weights=False)).eval()
    peft.save_pretrained(str(out / "adapter"))
    recipe = json.loads(json.dumps(shared["recipe"]))
    recipe["policy"]["model"] = str(folder)
    with Store(shared["db"]) as store:
        run_id = store.start_run("train", f"tiny-{family}", 0, recipe, out_dir=str(out))

    target = out / "gguf-lora"
    assert main(["export", str(out / "adapter"), "--to", "gguf-lora", "--out", str(target), "--db", str(shared["db"]),
                 "--base-gguf", str(base_gguf)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["run_id"] == run_id and result["base_gguf"] == str(base_gguf)
    assert Path(result["adapter_file"]) == (target / "adapter.gguf").resolve() and Path(result["adapter_file"]).is_file()
    assert (target / "Modelfile").read_text().startswith(f"FROM {base_gguf}\nADAPTER ./adapter.gguf\n")

    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in TEXTS]
    hf_lora = hf_rows(peft, prompts)
    with peft.disable_adapter():
        hf_base = hf_rows(peft, prompts)
    ll_base = llama_scores(str(base_gguf), prompts)
    ll_lora = llama_scores(str(base_gguf), prompts, lora_path=result["adapter_file"])
    assert all(np.isfinite(r).all() for r in ll_base + ll_lora)

    base_gap = max(float(np.abs(h - x).max()) for h, x in zip(hf_base, ll_base))
    moved = min(float(np.abs(x - b).max()) for x, b in zip(ll_lora, ll_base))
    hf_shift, ll_shift = log_probs(hf_lora) - log_probs(hf_base), log_probs(ll_lora) - log_probs(ll_base)
    correlation = float(np.corrcoef(hf_shift.ravel(), ll_shift.ravel())[0, 1])
    lora_gap = max(float(np.abs(h - x).max()) for h, x in zip(hf_lora, ll_lora))
    positions = sum(len(p) for p in prompts)
    top1 = int((np.concatenate(hf_lora).argmax(-1) == np.concatenate(ll_lora).argmax(-1)).sum())
    print(f"\n{family}: base GGUF vs transformers max |logit diff| {base_gap:.3f}; the LoRA moves llama.cpp's logits by "
          f">= {moved:.2f} per prompt (transformers+PEFT mean |log-prob shift| {np.abs(hf_shift).mean():.3f}, llama.cpp "
          f"{np.abs(ll_shift).mean():.3f}); shift correlation {correlation:.4f}; with the LoRA max |logit diff| "
          f"{lora_gap:.3f}, top-1 agreement {top1}/{positions} ({result['adapter_mb']} MB adapter)")
    assert base_gap < 0.5 and moved > 0.1
    assert correlation > 0.99 and top1 >= 0.9 * positions
