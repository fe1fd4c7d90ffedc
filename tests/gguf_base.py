"""A tiny model folder of tests/model_families.py written as a base GGUF file llama.cpp loads (test helper).

Why a GGUFWriter of our own rather than llama.cpp's convert_hf_to_gguf.py: the converter refuses
two of the stand-ins (Qwen 2: "BPE pre-tokenizer was not recognized"; Gemma 2: it wants a
sentencepiece tokenizer.model), and running it costs a subprocess that imports torch per family.
Copying a real vocabulary GGUF from llama-cpp-python's source distribution would need that
download and a model as wide as the real vocabulary (152k rows for Qwen, 256k for Gemma). The
stand-ins all carry the embedded SmolLM2 byte-level BPE tokenizer (plus the family's special
tokens), which llama.cpp knows as the "smollm" pre-tokenizer, so the vocabulary is written from
that tokenizer for every family (padded with [PADn] tokens to the model's vocab_size, as
convert_hf_to_gguf does), under the family's own architecture: llama.cpp does not tie the
tokenizer to the architecture.

What this writes follows convert_hf_to_gguf (conversion/qwen.py, conversion/gemma.py, base.py):
the architecture's hyperparameters, tensors named by gguf's tensor-name map (the map llama.cpp's
own LoRA converter uses, so the exported adapter's tensor names match), all in f32, no separate
output tensor (the stand-ins tie it to the embedding; llama.cpp then reuses token_embd), and for
Gemma 2 its softcapping, sliding window and every RMSNorm weight plus 1 (HF's Gemma norm scales
by 1 + weight, llama.cpp's by weight). Only these three families: llama.cpp runs them with NeoX-style
rotary embeddings, as transformers does; its LLAMA architecture would need q/k rows permuted
(convert_hf_to_gguf does that, and converts the llama3 stand-in as it is).
"""

from __future__ import annotations

import json
from pathlib import Path

ARCHES = {"qwen2": "QWEN2", "qwen3": "QWEN3", "gemma2": "GEMMA2"}  # transformers model_type: gguf.MODEL_ARCH


def write_base_gguf(folder: Path, target: Path, tokenizer=None) -> Path:
    """The model in `folder` (a build_family folder of qwen2, qwen3 or gemma2) as one f32 GGUF file at
    `target`; `tokenizer` is the folder's tokenizer when already loaded."""
    import gguf
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig

    folder, target = Path(folder), Path(target)
    config = AutoConfig.from_pretrained(folder)
    family = config.model_type
    if family not in ARCHES:
        raise ValueError(f"{folder}: {family} models are not written here (use convert_hf_to_gguf.py)")
    arch = getattr(gguf.MODEL_ARCH, ARCHES[family])
    name_map = gguf.get_tensor_name_map(arch, config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(target), gguf.MODEL_ARCH_NAMES[arch])
    writer.add_name(f"tiny-{family}")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    if family == "gemma2":
        writer.add_attn_logit_softcapping(config.attn_logit_softcapping)
        writer.add_final_logit_softcapping(config.final_logit_softcapping)
        writer.add_sliding_window(config.sliding_window)
    _add_vocab(writer, folder, config.vocab_size, tokenizer)

    for name, tensor in load_file(str(folder / "model.safetensors")).items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        mapped = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise ValueError(f"{family}: no GGUF name for tensor {name}")
        tensor = tensor.to(torch.float32)
        if family == "gemma2" and name.endswith("norm.weight"):
            tensor = tensor + 1
        writer.add_tensor(mapped, tensor.contiguous().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _add_vocab(writer, folder: Path, vocab_size: int, tokenizer=None) -> None:
    """The stand-in's byte-level BPE vocabulary, as convert_hf_to_gguf's get_vocab_base writes it."""
    import gguf
    from transformers import AutoTokenizer

    tokenizer = tokenizer or AutoTokenizer.from_pretrained(folder)
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for i in range(vocab_size):
        if i not in reverse:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(reverse[i])
            types.append(gguf.TokenType.CONTROL if i in added and added[i].special else
                         gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    if not special.merges:  # tokenizer.json's merges as "a b" strings
        merges = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))["model"]["merges"]
        special.merges = [m if isinstance(m, str) else " ".join(m) for m in merges]
    special.add_to_gguf(writer)
