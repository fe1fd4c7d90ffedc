"""What `check RECIPE` finds, loading no weights and needing no GPU: each model's files (a local
path or the Hugging Face cache, with the download command of a missing one), a two-turn episode
rendered with the policy's own chat template to count the token budget of the longest episode
the recipe allows, and the GPU memory estimate (memory.py) next to the card's."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path

from trustee_lite import prompts
from trustee_lite.config import EMBEDDED, Recipe
from trustee_lite.env import user_simulator
from trustee_lite.env.chat import PolicyChat, TemplateError, TokenTrace, example_call
from trustee_lite.env.pool.sources import preview_pool
from trustee_lite.env.pool.tools import ToolPool
from trustee_lite.env.role import tools_json
from trustee_lite.env.simulator import decoding_schema
from trustee_lite.env.task_source import read as read_task_file
from trustee_lite.env.task_source import task_set
from trustee_lite.env.toolcalls import format_call
from trustee_lite.lm import backend_class, converted
from trustee_lite.lm.models import locate
from trustee_lite.lm.quant import UNSLOTH_MAX_SEQ_LENGTH
from trustee_lite.memory import (
    GIB,
    Estimate,
    Shape,
    activation_bytes,
    kv_bytes,
    lora_params,
    lora_training_bytes,
    weight_bytes,
)
from trustee_lite.progress import counted, doing


@dataclass(frozen=True)
class Report:
    """What check found: the table's rows, and the problems that stop the recipe (none: it can run)."""

    rows: list[tuple[str, str]]
    problems: list[str]

    def table(self) -> str:
        width = max(len(k) for k, _ in self.rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in self.rows)


def check_recipe(recipe: Recipe, gpu_gib: float | None) -> Report:
    """Check the recipe; a model whose files are not here is a problem with its download command
    (and nothing else is checked until it is)."""
    missing = missing_models(recipe)
    if missing:
        return Report([], missing)
    rows, problems = run_check(recipe, gpu_gib)
    return Report(rows, [f"{recipe.source}: {problem}" for problem in problems])


@dataclass(frozen=True)
class Found:
    source: str  # local folder, or the snapshot folder in the Hugging Face cache
    gguf_file: str | None
    label: str


def find_model(recipe: Recipe, name: str) -> Found | str | None:
    """The model's files, a one-line 'missing' message with the download command, or None for a
    model on a server."""
    cfg = getattr(recipe, name)
    if backend_class(cfg.backend).remote:
        return None
    if cfg.model == EMBEDDED or Path(cfg.model).exists():
        location = locate(cfg)
        label = "embedded SmolLM2-135M" if cfg.model == EMBEDDED else cfg.model
        gguf = Path(location.source) / location.gguf_file if location.gguf_file else None
        copy = converted.any_copy(gguf) if gguf is not None and gguf.is_file() else None
        if copy is not None:  # the converted copy of the GGUF file: the same config and tokenizer, read at once
            return Found(str(copy), None, label)
        return Found(location.source, location.gguf_file, label)
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(cfg.model, "config.json")
    folder = Path(config).parent if isinstance(config, str) else None
    if folder is None or not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        return (f"{recipe.source}: {name}.model: {cfg.model} is not in the Hugging Face cache here "
                f"(download it: hf download {cfg.model})")
    return Found(str(folder), None, f"{cfg.model} ({folder})")


def missing_models(recipe: Recipe) -> list[str]:
    """One line per model whose files are not here, with its download command."""
    lines: dict[str, str] = {}
    for name in ("policy", "simulator"):
        found = find_model(recipe, name)
        if isinstance(found, str):
            lines.setdefault(getattr(recipe, name).model, found)
    return list(lines.values())


def run_check(recipe: Recipe, gpu_gib: float | None) -> tuple[list[tuple[str, str]], list[str]]:
    """(table rows, problems); call after missing_models() came back empty."""
    found = {name: find_model(recipe, name) for name in ("policy", "simulator")}
    sim_backend = backend_class(recipe.simulator.backend)
    if sim_backend.remote:  # a server answers; a local model's needs are the estimate below
        sim_backend.check_runnable(recipe.simulator, f"{recipe.source}: simulator")
    doing(f"{recipe.source}: reading the policy's config and tokenizer (no weights)")  # before torch's import
    from transformers import AutoConfig, AutoTokenizer

    policy = found["policy"]
    kwargs = {"gguf_file": policy.gguf_file} if policy.gguf_file else {}
    config = AutoConfig.from_pretrained(policy.source, local_files_only=True, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(policy.source, local_files_only=True, **kwargs)
    shape = Shape.of(config)
    rows, problems = [("recipe", f"{recipe.source}: valid")], []
    serves = " (llama_cpp: it serves an exported policy to eval and simulate, and does not train)" * (
        recipe.policy.backend == "llama_cpp")
    rows.append(("policy", f"{policy.label}: {shape.params / 1e9:.2f} B parameters, context {shape.window or '?':,}{serves}"))
    rows.append(("simulator", _simulator_row(recipe, found["simulator"])))
    pool, pool_text = preview_pool(recipe)
    rows.append(("tools", pool_text))
    if recipe.tasks is not None:
        rows.append(("tasks", _tasks_row(recipe, pool)))
    try:
        episode = episode_budget(recipe, tokenizer, pool)
    except TemplateError as err:
        return rows, [f"policy.model: {err}"]
    rows += [("template", episode.pop("template")), ("episode", episode.pop("text"))]
    window = shape.window
    unsloth = recipe.policy.load_in_4bit and recipe.policy.unsloth
    if window and episode["first_request"] > window:
        problems.append(f"the first policy request ({episode['first_request']:,} tokens) exceeds the context window "
                        f"({window:,}): every episode would end with context_limit")
    elif window and episode["tokens"] > window:
        rows.append(("warning", f"the longest episode ({episode['tokens']:,}) exceeds the window ({window:,}): "
                                "such episodes end with context_limit"))
    if unsloth and episode["tokens"] > UNSLOTH_MAX_SEQ_LENGTH:
        rows.append(("warning", f"with Unsloth the window is {UNSLOTH_MAX_SEQ_LENGTH:,} tokens"))
    estimate = memory_estimate(recipe, shape, tokenizer, episode["tokens"], pool)
    rows.append(("memory", _memory_row(recipe, estimate, episode["tokens"])))
    card_row, card_problem = card(recipe, estimate, gpu_gib)
    rows.append(("device", card_row))
    problems += [card_problem] if card_problem else []
    return rows, problems


def _tasks_row(recipe: Recipe, pool: ToolPool) -> str:
    """The tasks file, read and resolved in the pool (a mistake in it is the command's one line)."""
    cfg = recipe.tasks
    tasks = task_set(cfg, read_task_file(cfg), pool, recipe.seed)
    use = {"replace": "every task from the file", "mix": f"{cfg.from_file:.0%} of tasks from the file, the rest generated",
           "examples": f"every task generated, {counted(cfg.examples, 'file task')} shown as examples"}[cfg.mode]
    return (f"{tasks.file}: {counted(len(tasks.train) + len(tasks.held_out), 'task')} ({len(tasks.train)} for training, "
            f"{len(tasks.held_out)} held out); mode {cfg.mode}: {use}")


def _simulator_row(recipe: Recipe, found) -> str:
    sim = recipe.simulator
    if backend_class(sim.backend).remote:
        return f"{sim.model} on {sim.base_url} (reachable)"
    if recipe.shared_weights:
        return "the policy's weights with the adapter off (one copy)"
    return f"{found.label} ({sim.backend})"


def episode_budget(recipe: Recipe, tokenizer, pool: ToolPool) -> dict:
    """Render the start of an episode at the recipe's hardest settings (most tools, the longest
    system prompt) with the policy's template, and count the longest episode's tokens."""
    knobs = recipe.curriculum.knobs
    _, tools = pool.sample(knobs.num_tools.max, random.Random(0))
    chat = PolicyChat(tokenizer, recipe.policy.thinking)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    trace = TokenTrace(chat, chat.first_prompt(prompts.policy_system_prompt(0), "Can you help me with this?", tools))
    prompt = len(trace.ids)
    trace.add_policy(chat.encode(format_call(*example_call(tools[0]))) + eos)
    before = len(trace.ids)
    result = ('{"status": "ok", "items": [' + ", ".join(['{"id": 1234, "name": "example"}'] * 40))[: recipe.tools.max_result_chars]
    trace.add_messages([chat.tool_message(tools[0]["function"]["name"], result)])
    per_result = len(trace.ids) - before
    trace.add_policy(chat.encode("Here is what I found.") + eos)
    before = len(trace.ids)
    reply = ("Thanks, and could you also check the next one? " * 20)[:user_reply_chars(recipe)]
    trace.add_messages([chat.user_message(reply)])
    per_user = len(trace.ids) - before
    tool_turns, user_turns = knobs.max_tool_turns.max, knobs.max_user_turns.max
    calls = recipe.rollout.max_parallel_calls  # results simulated per turn (calls past it: a short error)
    response = recipe.policy.max_response_tokens
    tokens = prompt + response + tool_turns * calls * per_result + user_turns * per_user
    tool_format = "native tools (<tool_call>)" if chat.native_tools else "Hermes tool block in the system prompt"
    thinking = {None: "template default", True: "on", False: "off"}[recipe.policy.thinking]
    return {
        "template": f"{tool_format}, tool role '{chat.tool_role}', {'a' if chat.system_role else 'no'} system role, "
                    f"thinking: {thinking}; a two-turn episode renders",
        "text": (f"prompt {prompt:,} ({len(tools)} tools) + policy <= {response:,} + tool results <= {tool_turns} x "
                 f"{calls} x {per_result} + user <= {user_turns} x {per_user} = {tokens:,} tokens"),
        "tokens": tokens, "first_request": prompt + recipe.policy.max_new_tokens,
    }


def user_reply_chars(recipe: Recipe) -> int:
    """The longest reply the user simulator can give: its schema's bound, as decoding enforces it
    with the recipe's simulator settings."""
    schema = decoding_schema(user_simulator.SCHEMA, recipe.simulator, recipe.simulator.max_new_tokens)
    return schema["properties"]["response"]["maxLength"]


def memory_estimate(recipe: Recipe, shape: Shape, tokenizer, episode_tokens: int, pool: ToolPool) -> Estimate:
    p, s, t = recipe.policy, recipe.simulator, recipe.train
    weights = weight_bytes(shape, p.load_in_4bit, _bytes_per_param(recipe))
    policy_kv = kv_bytes(shape, p.batch_size * episode_tokens)
    kv, sim_tokens = policy_kv, 0
    if recipe.shared_weights:  # one worker: a simulator batch never runs beside a policy batch
        history = ("The user asked for help and the assistant called a tool. " * 200)[: s.max_history_chars]
        _, tools = pool.sample(recipe.curriculum.knobs.num_tools.max, random.Random(0))
        text = prompts.render("verifier", first_query="?", intent="?", persona="?", expected_calls="?",
                              tools=tools_json(tools), history=history, criteria="1. ...")
        sim_tokens = len(tokenizer(text, add_special_tokens=False)["input_ids"]) + s.max_new_tokens
        kv = max(policy_kv, kv_bytes(shape, s.batch_size * sim_tokens))
    lora = lora_training_bytes(lora_params(shape, p.lora.rank, list(p.lora.target_modules)))
    activations = activation_bytes(shape, t.micro_batch_size, episode_tokens, t.gradient_checkpointing, t.kl_coef > 0,
                                   p.max_response_tokens)
    # at most one kept sequence per episode of a step (an episode's next turn replaces its last)
    episodes = t.tasks_per_step * recipe.rollout.rollouts_per_task
    kept = min(p.kv_reuse_mb * 2**20, kv_bytes(shape, episodes * episode_tokens))
    static = 0.0
    if compiled_decode(recipe):  # batches that fit a static cache's row decode there, the rest eager
        static = kv_bytes(shape, p.batch_size * p.static_cache_tokens)
        longest = max(episode_tokens, sim_tokens)
        kv = kv if longest > p.static_cache_tokens else 0.0
    return Estimate(weights=weights, generation_kv=kv, lora=lora, activations=activations, kept_kv=kept,
                    static_kv=static)


def compiled_decode(recipe: Recipe) -> bool:
    """The policy's backend decodes compiled, with static caches (`decode`; auto: on CUDA)."""
    return recipe.policy.decode == "compiled" or (recipe.policy.decode == "auto" and _on_cuda(recipe))


def _memory_row(recipe: Recipe, e: Estimate, episode_tokens: int) -> str:
    p, t = recipe.policy, recipe.train
    kind = "nf4" if p.load_in_4bit else {4.0: "fp32", 2.0: "16-bit"}[_bytes_per_param(recipe)]
    kv = f" + KV {e.generation_kv / GIB:.1f} for {p.batch_size} x {episode_tokens:,}"
    if e.static_kv:
        kv = (f" + static caches {e.static_kv / GIB:.1f} for {p.batch_size} x {p.static_cache_tokens:,}"
              + (kv + " (longer, eager)" if e.generation_kv else ""))
    kept = f" + earlier turns kept {e.kept_kv / GIB:.1f}" if e.kept_kv else ""
    return (f"generation {e.generation / GIB:.1f} GiB (weights {e.weights / GIB:.1f} {kind}{kv}{kept}); training "
            f"{e.training / GIB:.1f} GiB ({'+ static caches + ' if e.static_kv else '+ '}LoRA/Adam {e.lora / GIB:.2f} "
            f"+ activations {e.activations / GIB:.1f} for {t.micro_batch_size} x {episode_tokens:,}"
            f"{', checkpointing' if t.gradient_checkpointing else ''}); peak {e.peak / GIB:.1f} GiB "
            "(with the CUDA context and 10% slack)")


def _bytes_per_param(recipe: Recipe) -> float:
    """Unquantised weights: fp32 where the backend picks it (dtype auto off CUDA), else 16 bits."""
    dtype = recipe.policy.dtype
    return 4.0 if dtype == "float32" or (dtype == "auto" and not _on_cuda(recipe)) else 2.0


def _needs_cuda(recipe: Recipe) -> bool:
    return any(getattr(recipe, n).load_in_4bit or getattr(recipe, n).device == "cuda" for n in ("policy", "simulator"))


def _on_cuda(recipe: Recipe) -> bool:
    if _needs_cuda(recipe):
        return True
    import torch

    return recipe.policy.device == "auto" and torch.cuda.is_available()


def local_card() -> tuple[float, str] | None:
    """This machine's first CUDA card: its memory in bytes and its name (None: no CUDA here)."""
    import torch

    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    return props.total_memory, props.name


def card(recipe: Recipe, estimate: Estimate, gpu_gib: float | None) -> tuple[str, str | None]:
    """The memory to compare with (the card --gpu names, else the local card, else the RAM for
    a CPU recipe), and a problem if the recipe cannot run on it."""
    local = local_card() if gpu_gib is None else None
    if gpu_gib is not None:
        total, name = gpu_gib * GIB, f"a card of {gpu_gib:g} GiB (--gpu)"
    elif local is not None:
        total, name = local[0], f"{local[1]}, {local[0] / GIB:.1f} GiB"
    elif _needs_cuda(recipe):
        return ("no CUDA device here", "this recipe needs an NVIDIA GPU and none is here "
                "(--gpu GIB checks it against a card of that size)")
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        name = f"CPU, {total / GIB:.1f} GiB of RAM"
    need = estimate.peak
    if need > total:
        return f"{name}: needs {need / GIB:.1f} GiB", f"the estimated peak ({need / GIB:.1f} GiB) exceeds {name}"
    return f"{name}: fits, {(total - need) / GIB:.1f} GiB to spare", None
