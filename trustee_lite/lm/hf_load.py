"""Loading a causal LM for the transformers backend: a GGUF file (through its converted copy), a
local folder or a cached hub id, in full precision or NF4 (bitsandbytes), through Unsloth when
it is usable; and the facts generation needs from the loaded model (end-of-turn ids, context
window, whether its key/value cache can be reused)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trustee_lite.config import ModelConfig
from trustee_lite.errors import UserError
from trustee_lite.lm import converted, quant
from trustee_lite.lm.base import GenerationError
from trustee_lite.lm.models import locate


@dataclass
class Loaded:
    """A model as loaded, with its tokenizer and where it runs."""

    model: object
    tokenizer: object
    device: str
    model_id: str  # identity of the weights (the simulation cache key), ":nf4" when 4-bit
    unsloth: bool  # loaded through Unsloth (its PEFT model, adapter included)


def pick_device(requested: str) -> str:
    import torch

    if requested != "auto":
        if requested == "cuda" and not torch.cuda.is_available():
            raise UserError("device", "cuda was requested but no CUDA device is available")
        return requested
    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(requested: str, device: str):
    import torch

    if requested == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, requested)


def load(cfg: ModelConfig, place: str, lora=None, adapter: str | None = None, seed: int = 0,
         gradient_checkpointing: bool = False) -> Loaded:
    """Load the model a model section names, in eval mode on its device. `lora` (the policy's
    LoRA settings) lets a 4-bit policy load through Unsloth, adapter included, when Unsloth is
    installed and no starting `adapter` is named."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = locate(cfg)
    model_id = location.model_id
    unsloth = False
    four_bit = cfg.load_in_4bit
    kwargs = {"gguf_file": location.gguf_file} if location.gguf_file else {}
    # Never reach for a hub at run time: a hub id must already be in the local cache.
    kwargs["local_files_only"] = True
    if four_bit:
        kwargs["quantization_config"] = quant.bnb_4bit_config(place)  # refuses without CUDA
        kwargs["device_map"] = {"": torch.cuda.current_device()}
        model_id += ":nf4"
    device = "cuda" if four_bit else pick_device(cfg.device)
    use_unsloth = four_bit and lora is not None and adapter is None and getattr(cfg, "unsloth", False) and quant.unsloth_usable()
    try:
        if use_unsloth:
            model, tokenizer = quant.load_with_unsloth(
                location.source, lora, seed, quant.UNSLOTH_MAX_SEQ_LENGTH, gradient_checkpointing)
            unsloth = True
        else:
            dtype = pick_dtype(cfg.dtype, device)
            gguf = None if four_bit else location.gguf_path
            copy = converted.folder(gguf, dtype) if gguf is not None else None
            from_copy = converted.ready(copy)
            source = str(copy) if from_copy else location.source
            if from_copy:  # read the converted copy, not the GGUF
                kwargs = {"local_files_only": True}
            tokenizer = AutoTokenizer.from_pretrained(source, **{
                k: v for k, v in kwargs.items() if k in ("gguf_file", "local_files_only")})
            model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
            if copy is not None and not from_copy:
                converted.save(copy, model, tokenizer)
    except (OSError, ValueError) as err:
        raise cannot_read(f"{place}.model", location.source, err) from None
    model = (model if four_bit else model.to(device)).eval()
    if unsloth:
        quant.unsloth_mode(model, training=False)
    return Loaded(model, tokenizer, device, model_id, unsloth)


def reusable_cache(model, unsloth: bool) -> bool:
    """Whether this model's cache can be laid out by prefix_cache.py: every layer attends to the
    whole sequence (no sliding window, no recurrent state) in a transformers cache with layers;
    not under Unsloth, whose generation takes its own path."""
    from transformers import DynamicCache

    if unsloth or not hasattr(DynamicCache(), "layers"):
        return False
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    types = getattr(config, "layer_types", None)
    if types is not None:
        return all(t == "full_attention" for t in types)
    return getattr(config, "sliding_window", None) is None


def cache_argument(model) -> str:
    """The name generate() takes a cache under: `cache` from transformers 5.2x, before it
    `past_key_values`."""
    import inspect

    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(inner.forward).parameters else "past_key_values"


def tokenizer_of(cfg: ModelConfig, place: str):
    """The tokenizer alone (chat template included) of the model a section names: from the
    converted copy of a GGUF file when there is one (a second), else from the file itself."""
    from transformers import AutoTokenizer

    location = locate(cfg)
    copy = converted.any_copy(location.gguf_path) if location.gguf_path is not None else None
    kwargs = {"gguf_file": location.gguf_file} if location.gguf_file and copy is None else {}
    try:
        return AutoTokenizer.from_pretrained(str(copy or location.source), local_files_only=True, **kwargs)
    except (OSError, ValueError) as err:
        raise cannot_read(place, location.source, err, "read the tokenizer of") from None


def eos_ids(tokenizer, model) -> list[int]:
    """The ids that end a turn: the tokenizer's and the model's generation config's end of
    sequence (`model` None: the tokenizer's alone), and ChatML's <|im_end|> when it has one."""
    ids = []
    for candidate in (tokenizer.eos_token_id, getattr(getattr(model, "generation_config", None), "eos_token_id", None)):
        for tok in candidate if isinstance(candidate, list) else [candidate]:
            if tok is not None and tok not in ids:
                ids.append(tok)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end_of_turn, int) and end_of_turn != tokenizer.unk_token_id and end_of_turn not in ids:
        ids.append(end_of_turn)
    if not ids:
        raise GenerationError("the tokenizer has no end-of-sequence token")
    return ids


def neutral_generation_config(model, eos: list[int], pad_id: int):
    """A generation config with nothing but the special tokens: no sampling warpers, no
    penalties, no forced tokens."""
    from transformers import GenerationConfig

    old = getattr(model, "generation_config", None)
    return GenerationConfig(bos_token_id=getattr(old, "bos_token_id", None), eos_token_id=list(eos), pad_token_id=pad_id)


def config_window(config) -> int | None:
    """The longest sequence a model of this config takes (its position table)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return getattr(config, "max_position_embeddings", None)


def context_window(model, cap: int | None) -> int | None:
    """The longest sequence the model takes (its position table), capped by Unsloth's length."""
    window = config_window(model.config)
    if cap is not None:
        window = min(window, cap) if window else cap
    return window


def cannot_read(place: str, source: str, err: BaseException, verb: str = "load") -> UserError:
    """A model that cannot be read, in one line; a source that is not a local path is named with
    its download command."""
    hint = "" if Path(source).exists() else (
        f"; it is not a local path and not in the Hugging Face cache (fetch it first: hf download {source})")
    return UserError(place, f"cannot {verb} {source!r}{hint}: {first_line(err)}")


def first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else err.__class__.__name__
