"""`simulate RECIPE`: episodes without training, grouped as tasks x rollouts_per_task."""

from __future__ import annotations

import asyncio
import math
import time

from trustee_lite.cli import add_db, add_recipe, positive, print_json

HELP = "run episodes of the policy in the simulated environment"


def add_arguments(parser) -> None:
    add_recipe(parser)
    parser.add_argument("--episodes", type=positive, default=None, help="episodes to run (default: the recipe's simulate.episodes)")
    add_db(parser)


def run(args) -> int:
    from trustee_lite.config import load_recipe
    from trustee_lite.store import Store

    recipe = load_recipe(args.recipe, args.overrides)
    seed = recipe.seed if args.seed is None else args.seed
    with Store(args.db) as store:
        summary = asyncio.run(simulate(recipe, store, args.episodes or recipe.simulate.episodes, seed))
    print_json(summary, args.db)
    return 0


async def simulate(recipe, store, episodes: int, seed: int) -> dict:
    """Run `episodes` episodes at the recipe's initial level; return the summary (also stored)."""
    from trustee_lite.metrics import episode_figures
    from trustee_lite.progress import bar
    from trustee_lite.runtime import open_runtime, preflight

    preflight(recipe)
    start = time.perf_counter()
    per_task = recipe.rollout.rollouts_per_task
    level = recipe.curriculum.initial_level
    trajectories = []
    async with open_runtime(recipe, store) as runtime:
        run_id = store.start_run("simulate", recipe.name, seed, recipe.model_dump(mode="json"))
        store.set_tool_names(run_id, runtime.pool.original_names)
        progress = bar(episodes, "simulate")
        # Bound the tasks in flight so records keep flowing on long runs; enough to fill batches.
        gate = asyncio.Semaphore(max(1, math.ceil(2 * recipe.policy.batch_size / per_task)))

        def done(traj) -> None:
            trajectories.append(traj)
            progress.update(1)

        async def one_task(index: int) -> None:
            async with gate:
                draft = await runtime.draft(index, level, seed)
                await runtime.play(draft, min(per_task, episodes - index * per_task), seed, run_id, on_done=done)

        status = "interrupted"
        try:
            await asyncio.gather(*(one_task(i) for i in range(math.ceil(episodes / per_task))))
            status = "done"
        finally:
            progress.close()
            wall_s = time.perf_counter() - start
            figures, sim = episode_figures(trajectories), runtime.sim.stats.figures()
            summary = {
                **figures, **sim,
                "tokens_per_s": round((figures["policy_tokens"] + sim["simulator_tokens"]) / wall_s, 2) if wall_s > 0 else None,
                "policy_mean_batch": round(runtime.policy_service.stats.mean_batch, 2), "wall_s": round(wall_s, 2),
            }
            store.finish_run(run_id, status, summary)
    return {"run_id": run_id, **summary}
