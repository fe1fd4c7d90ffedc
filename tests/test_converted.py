"""The converted copy of the embedded GGUF: read once, then loaded from safetensors; the copy
is the same model (same template, same tokens, same logits) and is keyed so a changed file,
dtype or transformers version never meets an old copy."""

from __future__ import annotations

import os
from pathlib import Path

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


def test_the_copy_is_keyed_by_content_dtype_and_size_limit(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTEE_LITE_CACHE", str(tmp_path / "cache"))
    small = tmp_path / "m.gguf"
    small.write_bytes(b"x" * 100)
    first = converted.folder(small, torch.float32)
    assert first.parent == tmp_path / "cache" / "converted" and not converted.ready(first)
    assert converted.folder(small, torch.bfloat16) != first
    os.utime(small, ns=(1, 1))  # a fresh install: the same file, another modification time
    assert converted.folder(small, torch.float32) == first
    small.write_bytes(b"y" * 100)  # the file changed
    assert converted.folder(small, torch.float32) != first
    monkeypatch.setattr(converted, "MAX_BYTES", 50)
    assert converted.folder(small, torch.float32) is None


class _Saves:
    """What save() asks of a model and a tokenizer: files in a folder."""

    config = type("Config", (), {})()

    def save_pretrained(self, where):
        (Path(where) / "weights").write_text("w")


def test_a_new_copy_replaces_the_stale_one_of_the_same_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTEE_LITE_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "Small-135M-Instruct.Q4.gguf"  # dashes in the name, as real files have
    gguf.write_bytes(b"x" * 100)
    old = converted.folder(gguf, torch.float32)
    other_dtype = converted.folder(gguf, torch.bfloat16)
    for copy in (old, other_dtype):
        converted.save(copy, _Saves(), _Saves())
    by_mtime = old.with_name(old.name.replace(old.name.split("-")[-3], "1796003858858742276"))  # as named before
    by_mtime.mkdir()
    gguf.write_bytes(b"y" * 100)
    new = converted.folder(gguf, torch.float32)
    converted.save(new, _Saves(), _Saves())
    assert converted.ready(new) and converted.ready(other_dtype) and not old.exists() and not by_mtime.exists()
