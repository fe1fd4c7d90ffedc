"""The converted copy of the embedded GGUF: read once, then loaded from safetensors; the copy
is the same model (same template, same tokens, same logits) and is keyed so a changed file,
dtype or transformers version never meets an old copy."""

from __future__ import annotations

import os

import torch

from trustee_lite.lm import converted
from trustee_lite.lm.embedded import embedded_gguf


def test_the_copy_is_the_gguf_model(smol_backend):
    """smol_backend comes from the copy once one exists (the session's first load writes it)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf()
    copy = converted.folder(gguf, torch.float32)
    assert converted.ready(copy)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "Weather in Paris?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert smol_backend.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert smol_backend.tokenizer(text, return_tensors="pt")["input_ids"].tolist() == ids.tolist()
    with torch.no_grad():
        assert torch.equal(model(ids).logits, smol_backend.model.to("cpu")(ids).logits)


def test_the_copy_is_keyed_by_file_dtype_and_size_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTEE_LITE_CACHE", str(tmp_path / "cache"))
    small = tmp_path / "m.gguf"
    small.write_bytes(b"x" * 100)
    first = converted.folder(small, torch.float32)
    assert first.parent == tmp_path / "cache" / "converted" and not converted.ready(first)
    assert converted.folder(small, torch.bfloat16) != first
    os.utime(small, ns=(1, 1))
    assert converted.folder(small, torch.float32) != first
    monkeypatch.setattr(converted, "MAX_BYTES", 50)
    assert converted.folder(small, torch.float32) is None
