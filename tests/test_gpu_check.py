"""benchmarks/gpu_check.sh --tiny: the GPU check's code, every phase, on the CPU with a tiny
stand-in model (no NF4), so that a borrowed GPU's minutes are not spent finding its bugs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_tiny_gpu_check_runs_every_phase_and_writes_its_figures(tmp_path):
    env = dict(os.environ, OUT=str(tmp_path), PYTHON=sys.executable)
    run = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert {name: p["exit"] for name, p in result["phases"].items()} == {"model": 0, "decode": 0, "train": 0, "mixed": 0}
    decode = result["decode"]
    assert set(decode) == {"fp32 eager"} and set(decode["fp32 eager"]) == {"1", "4"}
    assert all(cell["tokens_s"] > 0 for cells in decode.values() for cell in cells.values())
    assert result["floor"]["tokens_s_batch1"] > 0
    train = result["train"]["eager"]
    assert train["exit"] == 0 and [s["step"] for s in train["steps"]] == [1, 2] and train["policy_tokens_s"] > 0
    assert result["train"]["check_memory"].startswith("memory")
    assert result["mixed"]["together_tokens_s"] > 0 and result["mixed"]["apart_tokens_s"] > 0
    assert "decode fp32 eager" in run.stdout and "train eager: exit 0" in run.stdout  # the table, printed last
