"""`export --to gguf`: the merged model as one quantised GGUF file (what LM Studio and most Ollama
users want): merged as export/merged.py does, converted by llama.cpp's own convert_hf_to_gguf.py
(export/converter.py) to f16, quantised by llama.cpp's llama_model_quantize (bound by
llama-cpp-python); with an Ollama Modelfile and a README beside it."""

from __future__ import annotations

import ctypes
import shutil
import tempfile
import time
from pathlib import Path

from trustee_lite.errors import UserError
from trustee_lite.export import converter
from trustee_lite.export.gguf_lora import modelfile
from trustee_lite.export.merged import SIDECAR, export_merged
from trustee_lite.export.source import ExportSource
from trustee_lite.progress import say

QUANTS = {"q8_0": "LLAMA_FTYPE_MOSTLY_Q8_0", "q4_k_m": "LLAMA_FTYPE_MOSTLY_Q4_K_M"}


def export_gguf(source: ExportSource, out: Path, quant: str) -> dict:
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    name = f"{source.run_name}-{quant}.gguf"
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        merged = export_merged(source, Path(tmp) / "merged")
        f16 = Path(tmp) / "model-f16.gguf"
        say("converting the merged model with llama.cpp's convert_hf_to_gguf.py (f16)")
        converter.run("convert_hf_to_gguf.py", [str(Path(tmp) / "merged"), "--outtype", "f16", "--outfile", str(f16)],
                      str(source.adapter))
        say(f"quantising to {quant} (llama.cpp's llama_model_quantize)")
        quantize(f16, out / name, quant)
        shutil.copy(Path(tmp) / "merged" / SIDECAR, out / SIDECAR)
    (out / "Modelfile").write_text(modelfile(f"./{name}", source.policy, None), encoding="utf-8")
    (out / "README.txt").write_text(
        f"llama.cpp:          llama-cli -m {name}\n"
        f"LM Studio:          load {name} (one file)\n"
        f"Ollama:             ollama create {source.run_name} -f Modelfile && ollama run {source.run_name}\n",
        encoding="utf-8")
    return {"to": "gguf", "quant": quant, "out": str(out.resolve()), "file": str((out / name).resolve()),
            "file_mb": round((out / name).stat().st_size / 2**20, 1), "dtype_merged": merged["dtype"],
            "run_id": source.run_id, "step": source.step, "wall_s": round(time.perf_counter() - start, 2)}


def quantize(source: Path, target: Path, quant: str) -> None:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, QUANTS[quant])
    params.nthread = 0  # all cores
    if llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), ctypes.byref(params)) != 0:
        raise UserError(str(source), f"llama.cpp could not quantise it to {quant}")
