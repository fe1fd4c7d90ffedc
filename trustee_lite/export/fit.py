"""Whether an adapter fits the base the run record names: every module it targets exists in the
base with the shapes its LoRA matrices need. Read from the adapter's safetensors header and the
base's config alone (the model is built on the meta device: no weights are read), so a mismatch
is one line before any conversion runs."""

from __future__ import annotations

import re
from pathlib import Path

from trustee_lite.errors import UserError

LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<side>[AB])(?:\.[^.]+)?\.weight$")


def check_fits(adapter: Path, config, base: str) -> None:
    """Refuse (UserError, one line) an adapter whose tensors do not fit the base of `config`."""
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    modules = dict(model.named_modules())
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as tensors:
        shapes = {key: tuple(tensors.get_slice(key).get_shape()) for key in tensors.keys()}
    for key, shape in sorted(shapes.items()):
        match = LORA_KEY.match(key)
        if match is None:
            continue
        name, side = match["module"], match["side"]
        module = modules.get(name) or modules.get(name.removeprefix("model."))
        weight = getattr(module, "weight", None)
        if weight is None or weight.dim() != 2:
            raise UserError(str(adapter), f"does not fit the base {base}: it adapts {name}, which the base has not")
        out_features, in_features = weight.shape
        wanted = in_features if side == "A" else out_features
        have = shape[1] if side == "A" else shape[0]
        if have != wanted:
            raise UserError(str(adapter), f"does not fit the base {base}: {name}'s lora_{side} has "
                                          f"{'inputs' if side == 'A' else 'outputs'} {have}, the base's {wanted}")
