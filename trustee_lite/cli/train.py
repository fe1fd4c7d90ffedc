"""`train RECIPE` (the default command): train or resume; one JSON line with the run's figures."""

from __future__ import annotations

import asyncio
from pathlib import Path

from trustee_lite.cli import add_db, add_recipe, all_aborted_status, positive, print_json, started

HELP = "train the policy (the default command: RECIPE alone means train RECIPE)"


def add_arguments(parser) -> None:
    add_recipe(parser)
    parser.add_argument("--steps", type=positive, default=None, help="total training steps (default: the recipe's train.steps)")
    add_db(parser)
    parser.add_argument("--out", default=None, help="folder for checkpoints and the adapter (default: runs/<recipe name>)")
    parser.add_argument("--fresh", action="store_true", help="start over instead of resuming the run in --out")


def run(args) -> int:
    from trustee_lite.config import load_recipe
    from trustee_lite.errors import UserError
    from trustee_lite.store import Store

    recipe = load_recipe(args.recipe, args.overrides)
    if recipe.policy.backend != "transformers":
        raise UserError(f"{recipe.source}: policy.backend", "llama_cpp serves an exported policy (eval, simulate); "
                                                            "training needs transformers")
    seed = recipe.seed if args.seed is None else args.seed
    out_dir = Path(args.out or Path("runs") / recipe.name).resolve()
    with Store(args.db) as store:
        started(args, f"training into {out_dir}")
        from trustee_lite.train.loop import train

        summary = asyncio.run(train(recipe, store, out_dir, seed, args.steps, args.fresh))
    status = all_aborted_status(summary)
    print_json(summary, args.db)
    return 130 if summary["status"] == "interrupted" else status
