"""`simulate`: episodes of the policy in the simulated environment, without training, grouped as
tasks x rollouts_per_task at the recipe's initial level; the run's summary is stored and returned."""

from __future__ import annotations

import math
import time

from trustee_lite.config import Recipe
from trustee_lite.metrics import all_aborted, episode_figures
from trustee_lite.records import Trajectory
from trustee_lite.runtime import open_runtime, preflight, recorded_run
from trustee_lite.store import Store


async def simulate(recipe: Recipe, store: Store, episodes: int, seed: int) -> dict:
    """Run `episodes` episodes at the recipe's initial level; return the summary (also stored)."""
    preflight(recipe)
    start = time.perf_counter()
    per_task = recipe.rollout.rollouts_per_task
    level = recipe.curriculum.initial_level
    trajectories: list[Trajectory] = []
    async with open_runtime(recipe, store) as runtime:

        def summary() -> dict:  # also of an interrupted run: what was played so far
            wall_s = time.perf_counter() - start
            figures, sim = episode_figures(trajectories), runtime.sim.stats.figures()
            return {
                **figures, **sim,
                "tokens_per_s": round((figures["policy_tokens"] + sim["simulator_tokens"]) / wall_s, 2) if wall_s > 0 else None,
                "policy_mean_batch": round(runtime.policy_service.stats.mean_batch, 2), "wall_s": round(wall_s, 2),
            }

        with recorded_run(store, "simulate", recipe, seed) as run:
            run.summarize = summary
            store.set_tool_names(run.id, runtime.pool.original_names)
            # Bound the tasks in flight so records keep flowing on long runs; enough to fill batches.
            await runtime.play_tasks(run.id, episodes, per_task, lambda i: runtime.draft(i, level, seed), seed,
                                     "simulate", limit=max(1, math.ceil(2 * recipe.policy.batch_size / per_task)),
                                     on_done=trajectories.append)
    return {"run_id": run.id, **run.summary, "all_aborted": all_aborted(trajectories)}
