"""GPU-only loading options: 4-bit weights through bitsandbytes, Unsloth's loaders when installed.

Nothing here imports a GPU-only package at module level: bitsandbytes and unsloth are imported
only on a machine with CUDA, when a recipe asks for 4-bit loading. (Unsloth refuses to import
without a GPU and patches torch and transformers when it does, so it must never be touched on
the CPU path.)
"""

from __future__ import annotations

import importlib.util

from trustee_lite.errors import UserError

GPU_EXTRA = "pip install 'trustee-lite[gpu]'"
UNSLOTH_MAX_SEQ_LENGTH = 8192  # longest sequence Unsloth prepares for (prompt + episode)


def require_cuda(place: str) -> None:
    import torch

    if not torch.cuda.is_available():
        raise UserError(f"{place}.load_in_4bit", "4-bit loading needs an NVIDIA GPU with CUDA and none is "
                        "available here (set load_in_4bit: false, or use recipes/smoke.yaml on a CPU)")


def bnb_4bit_config(place: str):
    """NF4 weights, double quantisation, bf16 compute: QLoRA's settings."""
    require_cuda(place)
    if importlib.util.find_spec("bitsandbytes") is None:
        raise UserError(f"{place}.load_in_4bit", f"needs bitsandbytes, which is not installed ({GPU_EXTRA})")
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def unsloth_usable() -> bool:
    """Unsloth is installed and there is a CUDA device for it (checked without importing it)."""
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("unsloth") is not None


def load_with_unsloth(source: str, lora, seed: int, max_seq_length: int, gradient_checkpointing: bool):
    """The policy through Unsloth: 4-bit base, LoRA adapter on it, Unsloth's checkpointing.
    Returns (model, tokenizer); the model is a PEFT model whose adapter the learner trains."""
    from unsloth import FastLanguageModel

    model, tokenizer = FastLanguageModel.from_pretrained(
        model_name=source, max_seq_length=max_seq_length, load_in_4bit=True, dtype=None, local_files_only=True,
    )
    model = FastLanguageModel.get_peft_model(
        model, r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules), bias="none",
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False, random_state=seed,
    )
    return model, tokenizer


def unsloth_mode(model, training: bool) -> None:
    """Switch Unsloth between its training path and its fast inference path."""
    from unsloth import FastLanguageModel

    (FastLanguageModel.for_training if training else FastLanguageModel.for_inference)(model)
