"""The policy's trainable LoRA adapter, put on the model the transformers backend serves (PEFT)."""

from __future__ import annotations


def attach_lora(model, lora, gradient_checkpointing: bool):
    """`model` with a trainable LoRA adapter (PEFT): a PEFT model keeps its adapter and trains
    it; any other gets a new one from the recipe's LoRA settings. In eval mode, as generation wants."""
    import warnings

    from peft import LoraConfig as PeftLoraConfig
    from peft import PeftModel, get_peft_model

    if isinstance(model, PeftModel):
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
    else:
        config = PeftLoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                target_modules=list(lora.target_modules), task_type="CAUSAL_LM")
        with warnings.catch_warnings():  # transformers' deprecation notes from inside PEFT
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, config)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return model.eval()
