"""`eval`: the policy (base or adapters) on BFCL categories and on held-out simulated tasks.

Each policy variant (the base, or one adapter) is one run in the database (kind "eval"): every
BFCL item is stored as it is scored, every held-out episode as a trajectory, and one
eval_results row per category when it is complete. Generation goes through the same batching
service as training, with the rollout's chat template and tool-call parser, greedily.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from trustee_lite import prompts
from trustee_lite.config import CurriculumConfig, Recipe
from trustee_lite.config.models import gguf_lora
from trustee_lite.env.chat import PolicyChat, TemplateError, TokenTrace
from trustee_lite.env.drafting import draft_file_task
from trustee_lite.env.knobs import knobs_at, pin_fixed
from trustee_lite.env.task_file import FileTask, resolve
from trustee_lite.errors import UserError
from trustee_lite.evaluation import bfcl
from trustee_lite.evaluation.tables import abort_rate, compare_table, variant_table
from trustee_lite.lm import ContextLimit, GenerationError, GenerationService, GenRequest, Sampling
from trustee_lite.metrics import all_aborted, episode_figures, mean, rounded
from trustee_lite.progress import bar, say
from trustee_lite.records import Trajectory
from trustee_lite.runtime import load_policy, open_runtime, policy_chat, preflight, recorded_run
from trustee_lite.seeds import derive_seed
from trustee_lite.store import Store


@dataclass(frozen=True)
class Plan:
    categories: list[str]  # BFCL categories, checked
    limit: int | None  # first N items of each category
    simulated: int  # held-out simulated tasks (0: none)
    level: int  # their difficulty level
    max_new_tokens: int
    curriculum: CurriculumConfig  # the recipe's (the system prompt at `level` comes from its knobs)
    tasks: tuple[str, list[FileTask]] | None = None  # the user's tasks, by file name (HELD_OUT: the recipe's held-out ones)

    @property
    def episodes(self) -> bool:
        """Simulated episodes are played (the simulator is needed)."""
        return self.simulated > 0 or self.tasks is not None

    def system_prompt(self) -> str:
        """The system prompt the curriculum gives the policy at the evaluation level."""
        c = self.curriculum
        return prompts.policy_system_prompt(pin_fixed(knobs_at(self.level, c.knobs), c.fixed_aspects, c.knobs).system_prompt)


def check_adapter(path: str, backend: str = "transformers") -> str:
    folder = Path(path)
    if backend == "llama_cpp":
        if gguf_lora(folder) is None:
            raise UserError("--adapter", f"{path}: not a GGUF LoRA (a .gguf file, or the folder export --to gguf-lora "
                                         "wrote); a PEFT folder runs with --policy-backend transformers")
        return str(folder.resolve())
    if not (folder / "adapter_config.json").is_file():
        raise UserError("--adapter", f"{path}: not a PEFT adapter folder (no adapter_config.json)")
    return str(folder.resolve())


def adapter_step(path: str | None) -> int | None:
    """The training step an adapter is from: its state.json (an exported GGUF LoRA: its export's
    trustee_lite.json), or a step-NNNNNN folder name."""
    if path is None:
        return None
    if Path(path).is_file() or gguf_lora(Path(path)) is not None:
        sidecar = (Path(path).parent if Path(path).is_file() else Path(path)) / "trustee_lite.json"
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            return int(json.loads(sidecar.read_text(encoding="utf-8"))["step"])
        return None
    state = Path(path) / "state.json"
    if state.is_file():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            return int(json.loads(state.read_text(encoding="utf-8"))["step"])
    match = re.fullmatch(r"step-(\d+)", Path(path).name)
    return int(match.group(1)) if match else None


def label(adapter: str | None) -> str:
    return "base" if adapter is None else adapter


async def evaluate(recipe: Recipe, store: Store, adapters: list[str | None], plan: Plan, seed: int) -> dict:
    """Evaluate each variant in turn, each one's table on stderr (and, for several, the compare
    view after); return {"variants": [...]} with every score."""
    preflight(recipe, simulator=plan.episodes)  # BFCL alone needs no simulator
    items = {category: bfcl.load(category, plan.limit) for category in plan.categories}
    system = plan.system_prompt()
    out, aborted = [], []  # aborted: per variant, why every simulated episode aborted (None: some played)
    for adapter in adapters:
        variant = _variant_recipe(recipe, adapter)
        started, scores = time.perf_counter(), []
        common = {"adapter": adapter, "adapter_step": adapter_step(adapter)}
        with recorded_run(store, "eval", variant, seed) as run:
            run.summarize = lambda: {"adapter": adapter, "scores": scores,
                                     "wall_s": round(time.perf_counter() - started, 2)}
            async with _policy_side(variant, store, plan.episodes) as (runtime, service, chat):
                if runtime is not None:
                    store.set_tool_names(run.id, runtime.pool.original_names)
                # All categories at once, so the batching service always has a full batch to run.
                scores += await asyncio.gather(*(_bfcl_category(category, rows, system, service, chat, store, run.id, plan, common)
                                                 for category, rows in items.items()))
                if plan.simulated:
                    score, every_aborted = await _simulated(runtime, run.id, plan, seed, common)
                    scores.append(score)
                    aborted.append(every_aborted)
                if plan.tasks is not None:
                    score, every_aborted = await _file_tasks(runtime, run.id, plan, seed, common)
                    scores.append(score)
                    aborted.append(every_aborted)
        say(variant_table(label(adapter), scores))
        out.append({"run_id": run.id, **run.summary})
    if len(out) > 1:
        say(compare_table(store.eval_results([v["run_id"] for v in out])))
    # every simulated episode of every variant aborted: the command says why and exits 3
    return {"variants": out, "all_aborted": aborted[0] if aborted and all(aborted) else None}


def _variant_recipe(recipe: Recipe, adapter: str | None) -> Recipe:
    """The recipe with this adapter on the policy, decoding greedily."""
    policy = recipe.policy.model_copy(update={"adapter": adapter, "temperature": 0.0, "top_p": 1.0})
    return recipe.model_copy(update={"policy": policy})


@contextlib.asynccontextmanager
async def _policy_side(recipe: Recipe, store: Store, with_simulator: bool):
    """(runtime or None, the policy's generation service, its chat renderer)."""
    if with_simulator:
        async with open_runtime(recipe, store) as runtime:
            yield runtime, runtime.policy_service, runtime.policy.chat
        return
    backend = load_policy(recipe)
    try:
        async with GenerationService.of(backend, recipe.policy) as service:
            yield None, service, policy_chat(recipe, backend.tokenizer)
    finally:
        backend.close()


async def _bfcl_category(category: str, items: list, system: str, service: GenerationService, chat: PolicyChat,
                         store: Store, run_id: int, plan: Plan, common: dict) -> dict:
    progress = bar(len(items), f"bfcl {category}", unit="item")
    outcomes: list[bfcl.Outcome] = []

    async def generate(system_prompt: str, messages: list[dict], tools: list[dict]) -> str:
        ids = chat.prompt(system_prompt, messages, tools)
        request = GenRequest(prompt_ids=tuple(ids), sampling=Sampling(max_new_tokens=plan.max_new_tokens, temperature=0.0))
        return (await service.generate(request)).text

    async def single_turn(item: bfcl.Item) -> tuple[str, bfcl.Outcome]:
        extra = bfcl.system_text(item)
        text = await generate(f"{system}\n\n{extra}" if extra else system, bfcl.conversation(item), item.tools)
        return text, bfcl.score(category, item, text)

    async def multi_turn(item: bfcl.MultiTurnItem) -> tuple[str, bfcl.Outcome]:
        # As in training, each policy turn stays in the context exactly as generated and only the
        # new messages are rendered after it (Qwen3 would otherwise drop earlier think blocks).
        trace: TokenTrace | None = None
        seen = 0  # messages already in the trace; the next one is the policy's own last turn

        async def reply(messages: list[dict]) -> str:
            nonlocal trace, seen
            if trace is None:
                trace = TokenTrace(chat, chat.prompt(system, chat.messages(messages), item.tools))
            else:
                trace.add_messages(chat.messages(messages[seen + 1:]))
            completion = await service.generate(GenRequest(
                prompt_ids=tuple(trace.ids), sampling=Sampling(max_new_tokens=plan.max_new_tokens, temperature=0.0)))
            trace.add_policy(completion.token_ids)
            seen = len(messages)
            return completion.text

        decoded, texts = await bfcl.play_multi_turn(item, reply)
        return json.dumps(texts, ensure_ascii=False), bfcl.score_multi_turn(item, decoded)

    async def one(item) -> None:
        try:
            text, outcome = await (multi_turn(item) if category in bfcl.MULTI_TURN_CATEGORIES else single_turn(item))
        except (GenerationError, TemplateError) as err:
            reason = err.reason if isinstance(err, (ContextLimit, TemplateError)) else "policy_error"
            text, outcome = "", bfcl.Outcome(False, "policy_error", reason, str(err))
        store.add_eval_item(run_id, category, item.id, outcome, text)
        outcomes.append(outcome)
        progress.update(1)

    try:
        await asyncio.gather(*(one(item) for item in items))
    finally:
        progress.close()
    record = {**common, "benchmark": "bfcl", "category": category, "count": len(outcomes),
              "score": rounded(mean(o.valid for o in outcomes)),
              "errors": dict(Counter(o.kind for o in outcomes if not o.valid))}
    store.add_eval_result(run_id, record)
    return record


def heldout_seed(seed: int) -> int:
    """Held-out tasks come from their own seed, never one a training run draws tasks from."""
    return derive_seed(seed, "held-out")


async def _simulated(runtime, run_id: int, plan: Plan, seed: int, common: dict) -> tuple[dict, str | None]:
    """`plan.simulated` held-out tasks at `plan.level`, one greedy episode each. The tasks depend
    only on the seed (and are cached), so every adapter of a run meets the same ones. Returns the
    score, and why every episode aborted if all did."""
    task_seed = heldout_seed(seed)
    trajectories = await _played(runtime, run_id, plan.simulated, lambda i: runtime.draft(i, plan.level, task_seed, from_file=False),
                                 task_seed, f"simulated level {plan.level}")
    figures = episode_figures(trajectories)
    result = {**common, "benchmark": "simulated", "category": f"level {plan.level}", "count": len(trajectories),
              "score": figures["mean_reward"], "errors": figures["abort_reasons"]}
    return _scored(runtime, run_id, result, trajectories, f"simulated level {plan.level}")


HELD_OUT = "held out"  # eval --tasks without a file: the recipe's held-out tasks


async def _file_tasks(runtime, run_id: int, plan: Plan, seed: int, common: dict) -> tuple[dict, str | None]:
    """The user's tasks (a file, or the recipe's held-out share), one greedy episode each at
    `plan.level`, with the simulated user, tools and verifier: mean reward and success rate."""
    name, rows = plan.tasks
    if name == HELD_OUT:
        file, chosen = runtime.tasks.file, runtime.tasks.held_out
        name = f"{file} (held out)"
    else:
        file, chosen = name, tuple(resolve(rows, runtime.pool))
    task_seed = heldout_seed(seed)
    first = plan.simulated  # task indices after the simulated held-out tasks' in the same run
    trajectories = await _played(runtime, run_id, len(chosen), lambda i: draft_file_task(
        runtime.sim, runtime.pool, plan.curriculum, chosen[i], file, first + i, plan.level, task_seed), task_seed, f"tasks {name}")
    figures = episode_figures(trajectories)
    result = {**common, "benchmark": "tasks", "category": name, "count": len(trajectories),
              "score": figures["mean_reward"], "errors": figures["abort_reasons"],
              "figures": {"success_rate": figures["success_rate"]}}
    return _scored(runtime, run_id, result, trajectories, f"tasks {name}")


async def _played(runtime, run_id: int, count: int, draft, task_seed: int, desc: str) -> list[Trajectory]:
    """`count` task slots drafted by `draft(i)`, one greedy episode each, behind the batch limit."""
    trajectories: list[Trajectory] = []
    await runtime.play_tasks(run_id, count, 1, draft, task_seed, desc, limit=2 * runtime.recipe.policy.batch_size,
                             on_done=trajectories.append)
    return trajectories


def _scored(runtime, run_id: int, result: dict, trajectories: list[Trajectory], desc: str) -> tuple[dict, str | None]:
    """Store the result; return it with its abort rate, and why every episode aborted if all did."""
    runtime.store.add_eval_result(run_id, result)
    every_aborted = all_aborted(trajectories)
    if every_aborted:
        say(f"{desc}: every episode aborted: {every_aborted}")
    return {**result, "abort_rate": abort_rate(result)}, every_aborted
