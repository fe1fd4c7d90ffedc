"""A tool whose schema alone cannot fit a model's context window can be in no prompt: every task
drawing it would abort. Refused when the pool loads (every command), naming the tool and its
token count, counted with the policy's tokenizer without loading any weights.

Cheap first: a token is at least one character, so a tool of fewer characters than the smallest
window fits; only longer ones need the windows (from the models' configs) and a count."""

from __future__ import annotations

import json
import logging

from trustee_lite.config import Recipe
from trustee_lite.errors import UserError
from trustee_lite.lm import backend_class, converted
from trustee_lite.lm.hf_load import config_window, first_line
from trustee_lite.lm.models import locate

log = logging.getLogger(__name__)

SURE_WINDOW = 2048  # no model this tool runs has a smaller window, unless the recipe says so (n_ctx)


def check_fit(recipe: Recipe, tools: list[dict]) -> None:
    """Refuse the first tool whose schema is longer, in the policy's tokens, than the policy's or
    the simulator's context window (UserError)."""
    sizes = {t["function"]["name"]: json.dumps(t, ensure_ascii=False) for t in tools}
    floor = min([SURE_WINDOW] + ([recipe.simulator.n_ctx] if recipe.simulator.backend == "llama_cpp" else []))
    long = {name: text for name, text in sizes.items() if len(text) > floor}
    if not long:
        return
    try:
        windows = _windows(recipe)
        smallest = min(windows.values(), default=None)
        long = {name: text for name, text in long.items() if smallest is not None and len(text) > smallest}
        tokenizer = _policy_tokenizer(recipe) if long else None
    except (OSError, ValueError) as err:  # the model's files are not here (tools list, check): nothing to count with
        log.info("tools: sizes not checked against the context windows (%s)", first_line(err))
        return
    if not long:
        return
    for name, text in long.items():
        tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        for role, window in sorted(windows.items(), key=lambda item: item[1]):  # the smallest it exceeds
            if tokens > window:
                raise UserError(f"{recipe.source}: tools", f"tool {name!r} alone is {tokens:,} tokens, more than the "
                                f"{role}'s context window of {window:,}: it would abort every task that draws it "
                                "(shorten its description, or leave it out)")


def _windows(recipe: Recipe) -> dict[str, int]:
    """The context windows known without loading weights: the policy's, the simulator's (a
    server's is unknown: left out, said so)."""
    windows = {"policy": _config_window(recipe.policy)}
    sim = recipe.simulator
    if sim.backend == "llama_cpp":
        windows["simulator"] = sim.n_ctx
    elif backend_class(sim.backend).remote:
        log.info("tools: the simulator's context window on its server is unknown; tool sizes checked for the policy")
    else:
        windows["simulator"] = _config_window(sim)
    return {role: window for role, window in windows.items() if window}


def _config_window(cfg) -> int | None:
    from transformers import AutoConfig

    source, kwargs = _files(cfg)
    return config_window(AutoConfig.from_pretrained(source, local_files_only=True, **kwargs))


def _policy_tokenizer(recipe: Recipe):
    from transformers import AutoTokenizer

    source, kwargs = _files(recipe.policy)
    return AutoTokenizer.from_pretrained(source, local_files_only=True, **kwargs)


def _files(cfg) -> tuple[str, dict]:
    """Where a model's config and tokenizer are read: a GGUF file's converted copy when there is
    one (0.5 s, where reading the GGUF takes 10 s or more)."""
    location = locate(cfg)
    if location.gguf_path is not None:
        import torch

        copies = [converted.folder(location.gguf_path, getattr(torch, d)) for d in ("float32", "bfloat16", "float16")]
        ready = next((c for c in copies if converted.ready(c)), None)
        if ready is not None:
            return str(ready), {}
    return location.source, {"gguf_file": location.gguf_file} if location.gguf_file else {}
