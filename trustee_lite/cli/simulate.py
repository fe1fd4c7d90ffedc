"""`simulate RECIPE`: episodes without training, grouped as tasks x rollouts_per_task."""

from __future__ import annotations

import asyncio

from trustee_lite.cli import add_db, add_recipe, all_aborted_status, positive, print_json, started

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
        started(args, "loading the tool pool and the models")
        from trustee_lite.simulate import simulate

        summary = asyncio.run(simulate(recipe, store, args.episodes or recipe.simulate.episodes, seed))
    status = all_aborted_status(summary)
    print_json(summary, args.db)
    return status
