"""`export --to merged`: a run's adapter merged into its base and saved as a transformers folder
that AutoModelForCausalLM loads, computing what the unmerged PEFT model computes; the run is
found by adapter folder, id or name; mistakes are one line."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from trustee_lite.__main__ import main
from trustee_lite.config import load_recipe
from trustee_lite.store import Store

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ["What's the weather in Paris?", "Book a table for two at 8 pm.", "<tool_call>\n{\"name\": \"get_stock_quote\""]


@pytest.fixture(scope="module")
def run(tmp_path_factory, smol_backend):
    """A training run in a database, its adapter with visible weights (PEFT, not initialised to zero)."""
    import torch
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("export")
    out, db = folder / "out", folder / "db.sqlite"
    torch.manual_seed(0)
    peft = get_peft_model(copy.deepcopy(smol_backend.model), LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)).eval()
    peft.save_pretrained(str(out / "adapter"))
    (out / "adapter" / "state.json").write_text(json.dumps({"step": 3}))
    recipe = load_recipe(str(ROOT / "recipes" / "smoke.yaml"), [])
    with Store(db) as store:
        run_id = store.start_run("train", "smoke", 0, recipe.model_dump(mode="json"), out_dir=str(out))
    return {"db": db, "out": out, "adapter": out / "adapter", "peft": peft, "run_id": run_id}


def logits(model, tokenizer):
    import torch

    with torch.no_grad():
        return [model(**tokenizer(p, return_tensors="pt")).logits[0].float() for p in PROMPTS]


def test_merged_folder_loads_and_computes_what_the_adapter_does(run, smol_backend, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = tmp_path / "merged"
    assert main(["export", str(run["adapter"]), "--to", "merged", "--out", str(target), "--db", str(run["db"])]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["run_id"] == run["run_id"] and result["step"] == 3 and result["dtype"] == "float32"
    assert err.startswith("loading the base embedded on the CPU")
    assert err.splitlines()[-1].startswith(f"wrote {target} (") and "vllm serve" in err
    model = AutoModelForCausalLM.from_pretrained(target).eval()
    tokenizer = AutoTokenizer.from_pretrained(target)
    assert tokenizer.chat_template == smol_backend.tokenizer.chat_template
    assert model.generation_config.do_sample and model.generation_config.temperature == 1.0
    assert model.generation_config.max_new_tokens == 64  # the smoke recipe's policy.max_new_tokens
    merged, unmerged = logits(model, tokenizer), logits(run["peft"], tokenizer)
    with run["peft"].disable_adapter():
        base = logits(run["peft"], tokenizer)
    worst = max((m - u).abs().max().item() for m, u in zip(merged, unmerged))
    moved = min((u - b).abs().max().item() for u, b in zip(unmerged, base))
    print(f"merged vs PEFT: max |logit diff| {worst:.2e}; the adapter moves logits by >= {moved:.2f}")
    assert worst < 1e-3 and moved > 0.1
    sidecar = json.loads((target / "trustee_lite.json").read_text())
    assert sidecar["base"] == "embedded" and sidecar["adapter"] == str(run["adapter"].resolve())


def test_a_run_by_name_or_id_and_one_line_mistakes(run, tmp_path, capsys):
    db = str(run["db"])
    for target, expected in ((str(tmp_path / "nothing"), "no training run with this name and no adapter folder"),
                             ("99", "99: no training run with this id"),
                             (str(tmp_path), "not a PEFT adapter folder")):
        assert main(["export", target, "--to", "merged", "--db", db]) == 2
        err = capsys.readouterr().err
        assert expected in err and err.count("\n") == 1, err
    (run["out"] / "export-merged").mkdir(exist_ok=True)
    (run["out"] / "export-merged" / "keep.txt").write_text("mine")
    assert main(["export", "smoke", "--to", "merged", "--db", db]) == 2  # by name: the default folder is not empty
    assert "is not empty: give a new folder (nothing is overwritten)" in capsys.readouterr().err
    assert (run["out"] / "export-merged" / "keep.txt").read_text() == "mine"
    stray = tmp_path / "stray"
    run["peft"].save_pretrained(str(stray))
    assert main(["export", str(stray), "--to", "merged", "--db", db]) == 2
    assert "no training run in the database wrote this adapter" in capsys.readouterr().err
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    other = run["out"] / "checkpoints" / "other-shape"  # a run's checkpoint folder, of a smaller model
    get_peft_model(LlamaForCausalLM(LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                                num_attention_heads=4, num_key_value_heads=2, vocab_size=1000)),
                   LoraConfig(r=4, target_modules=["q_proj", "v_proj"])).save_pretrained(str(other))
    target = tmp_path / "never"
    assert main(["export", str(other), "--to", "gguf-lora", "--out", str(target), "--db", db]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("does not fit the base embedded: model.layers.0.self_attn.q_proj's lora_A has "
                                     "inputs 64, the base's 576") in err, err
    assert not target.exists() and not list(tmp_path.glob(".never*"))  # nothing half-written is left


def test_a_hub_base_not_in_the_cache_names_the_download(run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    recipe = load_recipe(str(ROOT / "recipes" / "smoke.yaml"), []).model_dump(mode="json")
    recipe["policy"]["model"] = "Qwen/Qwen3-0.6B"
    out = tmp_path / "hubrun"
    run["peft"].save_pretrained(str(out / "adapter"))
    with Store(run["db"]) as store:
        store.start_run("train", "hub", 0, recipe, out_dir=str(out))
    assert main(["export", "hub", "--to", "merged", "--db", str(run["db"])]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and err[0] == "loading the base Qwen/Qwen3-0.6B on the CPU"  # then the one line
    assert "(fetch it first: hf download Qwen/Qwen3-0.6B)" in err[-1] and not (out / "export-merged").exists()
    assert not (out / ".export-merged.partial").exists()


QUESTIONS = ["What's the weather in Paris?", "Book a table for two at 8 pm.", "Convert 20 dollars to yen.",
             "Who wrote Hamlet?", "List my calendar events for Monday.", "Play some jazz.", "How tall is Everest?",
             "Send an email to Anna about the budget.", "What is 17 times 3?", "Find flights from Rome to Oslo.",
             "Is it going to rain tomorrow?", "Show my bank balance.", "Translate 'good morning' to French.",
             "Set a timer for ten minutes.", "What's Apple's stock price?", "Recommend a sci-fi movie.",
             "How many calories in an apple?", "Cancel my hotel booking.", "Turn off the living room lights.",
             "Summarise the news today."]


def next_token_logprobs(rows):
    import numpy as np

    rows = np.asarray(rows, dtype=np.float64)
    rows = rows - rows.max(axis=-1, keepdims=True)
    return rows - np.log(np.exp(rows).sum(axis=-1, keepdims=True))


@pytest.fixture(scope="module")
def chat_prompts(smol_backend):
    tokenizer = smol_backend.tokenizer
    rendered = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True)
                for q in QUESTIONS]
    return [list(p["input_ids"]) if hasattr(p, "keys") else list(p) for p in rendered]


@pytest.fixture(scope="module")
def peft_rows(run, chat_prompts):
    """transformers + PEFT: the last position's logits of each prompt, with and without the adapter."""
    import torch

    with torch.no_grad():
        lora = [run["peft"](torch.tensor([p])).logits[0, -1].numpy() for p in chat_prompts]
        with run["peft"].disable_adapter():
            base = [run["peft"](torch.tensor([p])).logits[0, -1].numpy() for p in chat_prompts]
    return lora, base


def llama_scores(model: str, prompts, **lora):
    """llama-cpp-python's logits at every position of each prompt (`lora`: lora_path=...)."""
    import numpy as np
    from llama_cpp import Llama

    llm = Llama(model_path=model, n_ctx=512, logits_all=True, verbose=False, seed=0, **lora)
    rows = []
    for p in prompts:
        llm.reset()
        llm.eval(p)
        rows.append(np.array(llm.scores[:len(p)], dtype=np.float32))
    llm.close()
    return rows


def llama_rows(model: str, prompts, **lora):
    """The last position's logits of each prompt."""
    return [scores[-1] for scores in llama_scores(model, prompts, **lora)]


def test_gguf_lora_in_llama_cpp_is_the_policy(run, chat_prompts, peft_rows, tmp_path, capsys):
    """The exported GGUF LoRA on the embedded GGUF base in llama-cpp-python against transformers +
    PEFT, next-token log-probs over 20 prompts (the figures the README quotes)."""
    import numpy as np

    from trustee_lite.lm.embedded import embedded_gguf

    target = tmp_path / "gguf"
    assert main(["export", str(run["adapter"]), "--to", "gguf-lora", "--out", str(target), "--db", str(run["db"])]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["base_gguf"] == str(embedded_gguf()) and "ollama create NAME -f" in err.splitlines()[-1]
    assert (target / "Modelfile").read_text().splitlines()[:5] == [
        f"FROM {embedded_gguf()}", "ADAPTER ./adapter.gguf", "PARAMETER temperature 1", "PARAMETER top_p 1",
        "PARAMETER num_predict 64"]
    hf_lora, hf_base = peft_rows
    ll_base = llama_rows(str(embedded_gguf()), chat_prompts)
    ll_lora = llama_rows(str(embedded_gguf()), chat_prompts, lora_path=result["adapter_file"])
    hf_shift = next_token_logprobs(hf_lora) - next_token_logprobs(hf_base)
    ll_shift = next_token_logprobs(ll_lora) - next_token_logprobs(ll_base)
    mean_shift = float(np.abs(hf_shift).mean())
    correlation = float(np.corrcoef(hf_shift.ravel(), ll_shift.ravel())[0, 1])
    top1 = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(hf_lora, ll_lora))
    print(f"gguf-lora vs PEFT over {len(chat_prompts)} prompts: mean |log-prob shift| {mean_shift:.3f} nats (llama.cpp "
          f"{float(np.abs(ll_shift).mean()):.3f}), shift correlation {correlation:.3f}, top-1 agreement {top1}/{len(chat_prompts)}")
    assert mean_shift >= 0.1 and correlation >= 0.9 and top1 >= 19


def test_one_quantised_gguf_is_the_merged_policy(run, chat_prompts, peft_rows, tmp_path, capsys):
    import numpy as np

    target = tmp_path / "one"
    assert main(["export", str(run["run_id"]), "--to", "gguf", "--out", str(target), "--db", str(run["db"])]) == 0
    result = json.loads(capsys.readouterr().out)
    assert Path(result["file"]).name == "smoke-q8_0.gguf" and (target / "Modelfile").read_text().startswith(
        "FROM ./smoke-q8_0.gguf\nPARAMETER temperature 1\n")
    assert sorted(p.name for p in target.iterdir()) == ["Modelfile", "README.txt", "smoke-q8_0.gguf", "trustee_lite.json"]
    rows = llama_rows(result["file"], chat_prompts)
    top1 = sum(int(np.argmax(a) == np.argmax(b)) for a, b in zip(peft_rows[0], rows))
    print(f"gguf q8_0 ({result['file_mb']} MB) vs PEFT over {len(chat_prompts)} prompts: top-1 agreement {top1}/{len(chat_prompts)}")
    assert top1 >= 18


def test_eval_through_llama_cpp_answers_as_the_trained_policy(run, tmp_path, capsys):
    """`eval --policy-backend llama_cpp` on the exported GGUF LoRA against `eval` with transformers
    + PEFT, the same BFCL items, greedy: the same answers. The llama.cpp side runs an f32 GGUF of
    the base's own weights (the transformers side dequantises the embedded Q4_1 file to f32), so
    what is compared is the served path (template, LoRA, decoding, stopping), not llama.cpp's
    quantised arithmetic (on the Q4_1 file itself, 1 of 10 64-token answers matched whole)."""
    from trustee_lite.export import converter
    from trustee_lite.lm import converted
    from trustee_lite.lm.embedded import embedded_gguf
    from trustee_lite.store import Store

    db, lora, base = str(run["db"]), tmp_path / "lora", tmp_path / "base-f32.gguf"
    assert main(["export", str(run["adapter"]), "--to", "gguf-lora", "--out", str(lora), "--db", db]) == 0
    converter.run("convert_hf_to_gguf.py", [str(converted.any_copy(embedded_gguf())), "--outtype", "f32",
                                            "--outfile", str(base)], "test")
    capsys.readouterr()
    common = ["eval", str(ROOT / "recipes" / "smoke.yaml"), "--bfcl", "simple_python", "--limit", "10",
              "--max-new-tokens", "32", "--db", db]
    assert main([*common, "--adapter", str(run["adapter"])]) == 0
    assert main([*common, "--policy-backend", "llama_cpp", "--adapter", str(lora), "--set", f"policy.model={base}"]) == 0
    variants = [json.loads(line)["variants"][0] for line in capsys.readouterr().out.splitlines()]
    assert variants[1]["adapter"] == str(lora) and variants[1]["scores"][0]["adapter_step"] == 3
    with Store(run["db"]) as store:
        answers = [{r["item_id"]: r["output"] for r in store.db.query(
            "SELECT item_id, output FROM eval_items WHERE run_id = ?", [v["run_id"]])} for v in variants]
    agree = sum(answers[0][item] == answers[1].get(item) for item in answers[0])
    print(f"eval through llama.cpp vs transformers + PEFT: {agree}/{len(answers[0])} greedy BFCL answers the same")
    assert len(answers[0]) == 10 and agree >= 9
