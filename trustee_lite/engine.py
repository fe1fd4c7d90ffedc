"""The asyncio engine: recipe -> knobs -> task generator -> rollouts -> verifier -> store.

Every episode is a coroutine; models are reached only through the generation services, which
batch concurrent requests and run them off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from dataclasses import dataclass

from .chat import PolicyChat, TemplateError
from .curriculum import sample_task_knobs
from .env import task_generator
from .env.role import SimulationFailed
from .env.simulator import SimulatorClient
from .env.tools import ToolPool, load_pool
from .errors import UserError
from .lm import GenerationService, build_backend
from .lm.quant import require_cuda
from .metrics import episode_figures
from .progress import bar
from .recipe import Recipe
from .records import Task, Trajectory
from .rollout import EpisodeLimits, Policy, run_episode
from .seeds import derive_seed
from .store import Store


@dataclass
class Environment:
    """Everything an episode needs, alive for the length of a run."""

    recipe: Recipe
    pool: ToolPool
    policy: Policy
    sim: SimulatorClient
    policy_service: GenerationService
    sim_service: GenerationService


def _same_model(recipe: Recipe) -> bool:
    p, s = recipe.policy, recipe.simulator
    return s.backend == "transformers" and (p.model, p.gguf_file, p.device, p.dtype, p.load_in_4bit) == (
        s.model, s.gguf_file, s.device, s.dtype, s.load_in_4bit)


def preflight(recipe: Recipe, simulator: bool = True) -> None:
    """Refuse what this machine cannot run before anything is loaded or recorded (the
    simulator too unless `simulator` is False: a run that only needs the policy)."""
    for name in ("policy", "simulator") if simulator else ("policy",):
        cfg = getattr(recipe, name)
        if cfg.backend == "transformers" and cfg.load_in_4bit:
            require_cuda(f"{recipe.source}: {name}")
    if simulator and recipe.simulator.backend == "openai":
        from .lm.remote import check_reachable

        check_reachable(recipe.simulator, f"{recipe.source}: simulator")


def load_policy(recipe: Recipe):
    """The policy's transformers backend, with the recipe's adapter if it names one."""
    return build_backend("transformers", recipe.policy, f"{recipe.source}: policy", adapter=recipe.policy.adapter,
                         lora=recipe.policy.lora, seed=recipe.seed,
                         gradient_checkpointing=recipe.train.gradient_checkpointing)


def policy_chat(recipe: Recipe, tokenizer) -> PolicyChat:
    """The policy's chat renderer; a tokenizer without a chat template is the user's error."""
    try:
        return PolicyChat(tokenizer, recipe.policy.thinking)
    except TemplateError as err:
        raise UserError(f"{recipe.source}: policy.model", f"{err} (a chat or instruct model is needed)") from None


@contextlib.asynccontextmanager
async def open_environment(recipe: Recipe, store: Store):
    """Load the tool pool and the models, start the generation services; close them after."""
    place = recipe.source
    pool = load_pool(recipe.tools.file, recipe.tools.categories, place)
    policy_backend = load_policy(recipe)
    shared = _same_model(recipe)  # one copy of the weights serves both; the simulator runs adapter-off
    sim_backend = policy_backend if shared else build_backend(recipe.simulator.backend, recipe.simulator, f"{place}: simulator")
    try:
        async with contextlib.AsyncExitStack() as stack:
            policy_service = await stack.enter_async_context(
                GenerationService(policy_backend, recipe.policy.batch_size, recipe.policy.batch_wait_ms / 1000)
            )
            sim_service = policy_service if shared else await stack.enter_async_context(
                GenerationService(sim_backend, recipe.simulator.batch_size, recipe.simulator.batch_wait_ms / 1000)
            )
            chat = policy_chat(recipe, policy_backend.tokenizer)
            policy = Policy(policy_service, chat, recipe.policy.temperature, recipe.policy.top_p)
            sim = SimulatorClient(sim_service, store, recipe.simulator)
            yield Environment(recipe, pool, policy, sim, policy_service, sim_service)
    finally:
        for backend in {id(policy_backend): policy_backend, id(sim_backend): sim_backend}.values():
            if hasattr(backend, "aclose"):  # a remote client closes its connections inside the loop
                await backend.aclose()
            else:
                backend.close()


async def generate_task(env: Environment, index: int, level: int, run_seed: int,
                        attempt: int = 0) -> tuple[Task | None, dict]:
    """Draw knobs and tools for task `index` and ask the task generator; None if it failed."""
    parts = ("task", index) + ((attempt,) if attempt else ())
    rng = random.Random(derive_seed(run_seed, *parts))
    knobs = sample_task_knobs(level, env.recipe.curriculum, rng)
    category, tools = env.pool.sample(knobs.num_tools, rng)
    info = {"index": index, "category": category, "knobs": knobs, "tool_names": [t["function"]["name"] for t in tools], "level": level}
    try:
        task = await env.sim.run(task_generator.request(index, category, tools, knobs), run_seed, *parts)
    except SimulationFailed as failure:
        return None, {**info, "failure": str(failure)}
    return task, info


async def make_task(env: Environment, index: int, level: int, run_seed: int, attempts: int,
                    level_step: int) -> tuple[Task | None, dict]:
    """A valid task for one slot of a batch: up to `attempts` draws; the later ones at a lowered
    level (by `level_step` every two attempts) so that a batch fills even when the generator
    struggles at the current difficulty."""
    task, info = None, {}
    for attempt in range(attempts):
        lowered = max(1, level - level_step * (attempt // 2))
        task, info = await generate_task(env, index, lowered, run_seed, attempt)
        if task is not None:
            break
    return task, info


async def play_task(env: Environment, task: Task, rollouts: int, run_seed: int, on_done) -> list[Trajectory]:
    """All rollouts of one task, concurrently; `on_done(traj)` as each finishes. In rollout order."""
    limits = EpisodeLimits.of(task.knobs, env.recipe)

    async def episode(r: int) -> Trajectory:
        traj = await run_episode(task, r, env.policy, env.sim, limits, run_seed)
        on_done(traj)
        return traj

    return list(await asyncio.gather(*(episode(r) for r in range(rollouts))))


def aborted_without_task(index: int, rollout: int, reason: str) -> Trajectory:
    return Trajectory(task_index=index, rollout_index=rollout, turns=(), end_reason="aborted",
                      final_reward=None, abort_reason=reason)


async def simulate(recipe: Recipe, store: Store, episodes: int, seed: int) -> dict:
    """Run `episodes` episodes, grouped as tasks x rollouts_per_task; return the summary."""
    preflight(recipe)
    start = time.perf_counter()
    per_task = recipe.rollout.rollouts_per_task
    n_tasks = math.ceil(episodes / per_task)
    level = recipe.curriculum.initial_level
    trajectories: list[Trajectory] = []
    async with open_environment(recipe, store) as env:
        run_id = store.start_run("simulate", recipe.name, seed, recipe.model_dump(mode="json"))
        progress = bar(episodes, "simulate")
        # Bound the tasks in flight so records keep flowing on long runs; enough to fill batches.
        gate = asyncio.Semaphore(max(1, math.ceil(2 * recipe.policy.batch_size / per_task)))

        async def one_task(index: int) -> None:
            rollouts = min(per_task, episodes - index * per_task)
            async with gate:
                task, info = await generate_task(env, index, level, seed)
                if task is None:
                    store.add_failed_task(run_id, index, info["category"], level, info["knobs"], info["tool_names"], info["failure"])
                    for r in range(rollouts):
                        record(None, aborted_without_task(index, r, "task_generator_invalid"))
                    return
                task_id = store.add_task(run_id, task, level)
                await play_task(env, task, rollouts, seed, lambda traj: record(task_id, traj))

        def record(task_id: int | None, traj: Trajectory) -> None:
            store.add_trajectory(run_id, task_id, traj)
            trajectories.append(traj)
            progress.update(1)

        status = "interrupted"
        try:
            await asyncio.gather(*(one_task(i) for i in range(n_tasks)))
            status = "done"
        finally:
            progress.close()
            summary = summarize(trajectories, env, time.perf_counter() - start)
            store.finish_run(run_id, status, summary)
    return {"run_id": run_id, **summary}


def summarize(trajectories: list[Trajectory], env: Environment, wall_s: float) -> dict:
    """The end-of-run figures (also stored with the run)."""
    figures = episode_figures(trajectories)
    stats = env.sim.stats
    tokens = figures["policy_tokens"] + stats.tokens
    return {
        **figures,
        "cache_hits": stats.cache_hits,
        "cache_misses": stats.cache_misses,
        "cache_hit_rate": round(stats.cache_hits / stats.calls, 4) if stats.calls else None,
        "simulator_retries": stats.retries,
        "simulator_parse_failures": stats.parse_failures,
        "simulator_rejected": stats.rejected,
        "simulator_truncated": stats.truncated,
        "simulator_tokens": stats.tokens,
        "tokens_per_s": round(tokens / wall_s, 2) if wall_s > 0 else None,
        "policy_mean_batch": round(env.policy_service.stats.mean_batch, 2),
        "wall_s": round(wall_s, 2),
    }
