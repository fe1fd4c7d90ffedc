"""The consumer-GPU path on a machine without one: clear refusals, nothing GPU-only imported,
and the GPU benchmark's code run end to end on a tiny model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trustee_lite.__main__ import main
from trustee_lite.store import Store

ROOT = Path(__file__).resolve().parents[1]
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")


@no_cuda
@pytest.mark.parametrize("recipe", ["desktop-24gb.yaml", "laptop-8gb.yaml"])
def test_4bit_recipe_without_cuda_is_one_line_and_exit_2(recipe, tmp_path, capsys):
    db = tmp_path / "db.sqlite"
    code = main([str(ROOT / "recipes" / recipe), "--db", str(db), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert err.startswith(f"{recipe}: policy.load_in_4bit: 4-bit loading needs an NVIDIA GPU with CUDA"), err
    with Store(db) as store:  # refused before anything was recorded
        assert store.db.execute("SELECT count(*) FROM runs").fetchone()[0] == 0


@pytest.mark.parametrize("section, fields, message", [
    ("policy", "model: embedded", "a GGUF model is already quantised"),
    ("simulator", "backend: llama_cpp", "applies to the transformers backend, not llama_cpp"),
])
def test_4bit_needs_a_transformers_safetensors_model(section, fields, message, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"{section}:\n  {fields}\n  load_in_4bit: true\n")
    assert main(["simulate", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"r.yaml: {section}.load_in_4bit: ") and message in err, err


def test_cpu_path_never_imports_gpu_only_packages():
    code = ("import sys, trustee_lite.train.loop, trustee_lite.lm.hf, trustee_lite.lm.llama_cpp, trustee_lite.train.learner\n"
            "from trustee_lite.lm import quant\n"
            "assert not quant.unsloth_usable() or __import__('torch').cuda.is_available()\n"
            "bad = sorted(m for m in ('unsloth', 'bitsandbytes') if m in sys.modules)\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_gpu_benchmark_code_runs_on_a_tiny_model(tmp_path):
    out = tmp_path / "gpu_step.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_step.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(out.read_text())
    assert set(result["decode_tokens_s"]) == {"1", "8", "32"}
    assert all(v > 0 for v in result["decode_tokens_s"].values())
    assert result["grpo_step"]["loss_finite"] and result["grpo_step"]["adapter_changed"]
    assert result["interleaved"]["adapter_on_vs_off_max_logit_diff"] > 0
    assert "batch 32 / batch 1" in done.stdout
