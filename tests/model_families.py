"""Tiny models of the families users run, built here without a download (test helper).

Each family is a randomly initialised model from that family's architecture (transformers'
own Qwen3, Qwen2, Llama and Gemma 2 classes), shrunk to a few layers, paired with a copy of the embedded
SmolLM2 tokenizer that gets the family's special tokens and a chat template written for this
project to reproduce the family's rendering (tests/templates/, checked against golden strings
from the published templates in tests/test_templates.py). The vocabulary is padded to a
multiple of 64, as real checkpoints pad theirs, so logits are wider than the tokenizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

TEMPLATES = Path(__file__).resolve().parent / "templates"
WINDOW = 4096  # max_position_embeddings of every tiny model


@dataclass(frozen=True)
class Family:
    name: str
    architecture: str  # transformers config class
    template: str  # file under tests/templates/
    eos: str
    pad: str
    bos: str | None = None
    added: tuple[str, ...] = ()  # plain added tokens (kept when decoding)
    special: tuple[str, ...] = ()  # special tokens
    generation: dict = field(default_factory=dict)  # the family's published generation_config.json
    arch: dict = field(default_factory=dict)


QWEN_TOKENS = ("<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>")
FAMILIES = {
    "qwen3": Family("qwen3", "Qwen3Config", "qwen3.jinja", eos="<|im_end|>", pad="<|endoftext|>",
                    added=("<think>", "</think>", *QWEN_TOKENS),
                    generation={"do_sample": True, "temperature": 0.6, "top_k": 20, "top_p": 0.95},
                    arch={"head_dim": 16}),
    "qwen2": Family("qwen2", "Qwen2Config", "qwen2.jinja", eos="<|im_end|>", pad="<|endoftext|>", added=QWEN_TOKENS,
                    generation={"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8,
                                "repetition_penalty": 1.05}),
    "llama3": Family("llama3", "LlamaConfig", "llama3.jinja", eos="<|eot_id|>", pad="<|end_of_text|>",
                     bos="<|begin_of_text|>",
                     special=("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                              "<|eot_id|>", "<|eom_id|>", "<|python_tag|>"),
                     generation={"do_sample": True, "temperature": 0.6, "top_p": 0.9}),
    # No system role and no tool role; the instruct model ends its turns with <end_of_turn>.
    "gemma2": Family("gemma2", "Gemma2Config", "gemma2.jinja", eos="<end_of_turn>", pad="<pad>", bos="<bos>",
                     special=("<bos>", "<eos>", "<pad>", "<start_of_turn>", "<end_of_turn>"),
                     generation={"do_sample": True, "temperature": 1.0, "top_p": 0.95},
                     arch={"head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 512}),
}


def family_tokenizer(family: Family, base_tokenizer, folder: Path):
    """The embedded tokenizer with the family's special tokens and chat template, saved to folder."""
    from transformers import AutoTokenizer

    base_tokenizer.save_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    if family.added:
        tok.add_tokens(list(family.added))
    if family.special:
        tok.add_special_tokens({"additional_special_tokens": list(family.special)})
    tok.eos_token, tok.pad_token = family.eos, family.pad
    if family.bos:
        tok.bos_token = family.bos
    tok.chat_template = (TEMPLATES / family.template).read_text(encoding="utf-8")
    tok.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def build_family(name: str, base_tokenizer, folder: Path, **generation) -> Path:
    """A local model folder (config, random weights, tokenizer, generation config) of the family;
    `generation` adds to the family's generation config (e.g. repetition_penalty=1.3)."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    family = FAMILIES[name]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tok = family_tokenizer(family, base_tokenizer, folder)
    ids = tok.convert_tokens_to_ids
    config = getattr(transformers, family.architecture)(
        vocab_size=64 * math.ceil(len(tok) / 64), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=WINDOW, tie_word_embeddings=True,
        initializer_range=0.3,  # logits of a few units, as a trained model has (0.02 gives near-uniform ones)
        bos_token_id=ids(family.bos) if family.bos else None, eos_token_id=ids(family.eos), pad_token_id=ids(family.pad),
        **family.arch,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(eos_token_id=[ids(family.eos)], pad_token_id=ids(family.pad),
                                               **{**family.generation, **generation})
    model.save_pretrained(folder)
    return folder
