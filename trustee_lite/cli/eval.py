"""`eval RECIPE`: the policy (base and adapters) on BFCL categories and held-out simulated tasks."""

from __future__ import annotations

import asyncio

from trustee_lite.cli import add_db, add_recipe, all_aborted_status, positive, print_json, started

HELP = "score the policy (base or adapters) on BFCL and on held-out simulated tasks"


def add_arguments(parser) -> None:
    add_recipe(parser, seed_help=None)
    parser.add_argument("--bfcl", nargs="+", default=[], metavar="CATEGORY",
                        help="BFCL v4 categories, e.g. simple_python multiple parallel (or: all)")
    parser.add_argument("--adapter", action="append", default=[], metavar="DIR",
                        help="a LoRA adapter folder to evaluate (repeatable; default: the recipe's policy as it is)")
    parser.add_argument("--base", action="store_true", help="evaluate the base model too, next to the adapters")
    parser.add_argument("--limit", type=positive, default=None, help="first N items of each BFCL category")
    parser.add_argument("--simulated", type=positive, default=None, metavar="N", help="N held-out simulated tasks")
    parser.add_argument("--level", type=int, default=None, help="their difficulty level (default: the recipe's initial level)")
    parser.add_argument("--max-new-tokens", type=positive, default=256, help="per answer (default: 256)")
    add_db(parser)
    parser.add_argument("--seed", type=int, default=None, help="seed of the held-out tasks (default: the recipe's seed)")


def run(args) -> int:
    from trustee_lite.config import load_recipe
    from trustee_lite.errors import UserError
    from trustee_lite.evaluation import bfcl
    from trustee_lite.evaluation.evaluate import Plan, check_adapter, evaluate
    from trustee_lite.store import Store

    recipe = load_recipe(args.recipe, args.overrides)
    seed = recipe.seed if args.seed is None else args.seed
    if not args.bfcl and not args.simulated:
        raise UserError("eval", "nothing to evaluate: give --bfcl CATEGORY ... and/or --simulated N")
    level = recipe.curriculum.initial_level if args.level is None else args.level
    if not 1 <= level <= 100:
        raise UserError("--level", f"must be between 1 and 100, got {level}")
    categories = bfcl.check_categories(args.bfcl) if args.bfcl else []
    adapters = [check_adapter(a) for a in args.adapter] or [recipe.policy.adapter]
    if args.base and None not in adapters:
        adapters.insert(0, None)
    plan = Plan(categories, args.limit, args.simulated or 0, level, args.max_new_tokens, recipe.curriculum)
    with Store(args.db) as store:
        started(args, "loading the policy")
        result = asyncio.run(evaluate(recipe, store, adapters, plan, seed))
    status = all_aborted_status(result)
    print_json(result, args.db)
    return status
