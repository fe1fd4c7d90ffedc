"""`export --to gguf-lora`: the adapter as a GGUF LoRA file (llama.cpp's own convert_lora_to_gguf,
export/converter.py) that llama.cpp loads with `--lora` and llama-cpp-python with `lora_path`,
beside the base GGUF; with an Ollama Modelfile (FROM the base GGUF, ADAPTER the file, the
recipe's sampling) and a README of how to run it."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from trustee_lite.errors import UserError
from trustee_lite.export import converter, ollama
from trustee_lite.export.fit import check_fits
from trustee_lite.export.merged import SIDECAR
from trustee_lite.export.source import ExportSource
from trustee_lite.progress import say

ADAPTER_FILE = "adapter.gguf"


def export_gguf_lora(source: ExportSource, out: Path, base_gguf: str | None) -> dict:
    from transformers import AutoConfig

    start = time.perf_counter()
    settings = json.loads((source.adapter / "adapter_config.json").read_text(encoding="utf-8"))
    for key, what in (("use_dora", "DoRA"), ("use_rslora", "rank-stabilised scaling"), ("modules_to_save", "fully trained modules")):
        if settings.get(key):
            raise UserError(str(source.adapter), f"uses {what} ({key}), which a GGUF LoRA cannot carry")
    base = base_gguf or _policy_gguf(source)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        config = _base_config(source, Path(tmp))
        check_fits(source.adapter, AutoConfig.from_pretrained(str(config), local_files_only=True), source.policy.model)
        say(f"converting the adapter with llama.cpp's convert_lora_to_gguf.py (base config: {config.name})")
        converter.run("convert_lora_to_gguf.py", ["--base", str(config), "--outtype", "f32",
                                                  "--outfile", str(out / ADAPTER_FILE), str(source.adapter)],
                      str(source.adapter))
    policy = source.policy
    (out / SIDECAR).write_text(json.dumps({**source.record(), "base_gguf": base}, indent=1), encoding="utf-8")
    (out / "Modelfile").write_text(modelfile(base, policy, ADAPTER_FILE), encoding="utf-8")
    (out / "README.txt").write_text(
        f"llama.cpp:          llama-cli -m {base or 'BASE.gguf'} --lora {ADAPTER_FILE}\n"
        f"llama-cpp-python:   Llama(model_path='{base or 'BASE.gguf'}', lora_path='{ADAPTER_FILE}')\n"
        f"Ollama:             ollama create {source.run_name} -f Modelfile && ollama run {source.run_name}\n",
        encoding="utf-8")
    return {"to": "gguf-lora", "out": str(out.resolve()), "adapter_file": str((out / ADAPTER_FILE).resolve()),
            "adapter_mb": round((out / ADAPTER_FILE).stat().st_size / 2**20, 2), "base_gguf": base,
            "run_id": source.run_id, "step": source.step, "wall_s": round(time.perf_counter() - start, 2)}


def modelfile(base: str | None, policy, adapter: str | None) -> str:
    """Ollama's Modelfile: the base GGUF, the adapter (if any), the recipe's sampling, then the
    chat lines of export/ollama.py: for a Qwen2.5, Qwen3, Llama 3 or Gemma 2 base (read from the
    base's files) its stop tokens and a TEMPLATE rendering what the policy was trained on; for any
    other base a comment saying there is none (Ollama then picks one from the GGUF's metadata,
    not checked here)."""
    lines = [f"FROM {base}" if base else "FROM ./BASE.gguf  # the base model as a GGUF file: put its path here",
             *([f"ADAPTER ./{adapter}"] if adapter else []),
             f"PARAMETER temperature {policy.temperature:g}", f"PARAMETER top_p {policy.top_p:g}",
             f"PARAMETER num_predict {policy.max_new_tokens}", *ollama.modelfile_lines(policy)]
    return "\n".join(lines) + "\n"


def _policy_gguf(source: ExportSource) -> str | None:
    """The base's own GGUF file, when the policy was loaded from one (the embedded model is)."""
    from trustee_lite.lm.models import locate

    path = locate(source.policy).gguf_path
    return str(path) if path is not None else None


def _base_config(source: ExportSource, tmp: Path) -> Path:
    """A folder with the base's config.json (all convert_lora_to_gguf reads of the base): the
    converted copy of a GGUF base when there is one, else the config written out."""
    from transformers import AutoConfig

    from trustee_lite.lm import converted, hf_load
    from trustee_lite.lm.models import locate

    location = locate(source.policy)
    if location.gguf_path is not None and (copy := converted.any_copy(location.gguf_path)) is not None:
        return copy
    kwargs = {"gguf_file": location.gguf_file} if location.gguf_file else {}
    try:
        config = AutoConfig.from_pretrained(location.source, local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        raise hf_load.cannot_read(f"run {source.run_id}: policy.model", location.source, err, "read") from None
    config.save_pretrained(str(tmp))
    return tmp
