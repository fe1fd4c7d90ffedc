"""`eval RECIPE`: the policy (base and adapters) on BFCL categories and held-out simulated tasks."""

from __future__ import annotations

import asyncio

from trustee_lite.cli import add_db, add_recipe, all_aborted_status, positive, print_json, started

HELP = "score the policy (base or adapters) on BFCL, held-out simulated tasks and your own tasks"


def add_arguments(parser) -> None:
    add_recipe(parser, seed_help=None)
    parser.add_argument("--bfcl", nargs="+", default=[], metavar="CATEGORY",
                        help="BFCL v4 categories, e.g. simple_python multiple parallel (or: all)")
    parser.add_argument("--adapter", action="append", default=[], metavar="DIR",
                        help="a LoRA adapter folder to evaluate (repeatable; default: the recipe's policy as it is); "
                             "with --policy-backend llama_cpp, a GGUF LoRA file or the folder export --to gguf-lora wrote")
    parser.add_argument("--policy-backend", choices=("transformers", "llama_cpp"), default=None,
                        help="run the policy with transformers (as it trained) or llama.cpp (a GGUF base and an exported "
                             "GGUF LoRA, as it will be served); default: the recipe's policy.backend")
    parser.add_argument("--base", action="store_true", help="evaluate the base model too, next to the adapters")
    parser.add_argument("--limit", type=positive, default=None, help="first N items of each BFCL category")
    parser.add_argument("--simulated", type=positive, default=None, metavar="N", help="N held-out simulated tasks")
    parser.add_argument("--tasks", nargs="?", const="", default=None, metavar="FILE",
                        help="your tasks (JSONL/JSON/YAML/CSV), played with the simulated user, tools and verifier "
                             "(without FILE: the recipe's held-out tasks, tasks.holdout)")
    parser.add_argument("--level", type=int, default=None, help="their difficulty level (default: the recipe's initial level)")
    parser.add_argument("--max-new-tokens", type=positive, default=256, help="per answer (default: 256)")
    add_db(parser)
    parser.add_argument("--seed", type=int, default=None, help="seed of the held-out tasks (default: the recipe's seed)")


def run(args) -> int:
    from trustee_lite.config import load_recipe
    from trustee_lite.env.task_file import read_tasks
    from trustee_lite.errors import UserError
    from trustee_lite.evaluation import bfcl
    from trustee_lite.evaluation.evaluate import HELD_OUT, Plan, check_adapter, evaluate
    from trustee_lite.store import Store

    overrides = args.overrides + ([f"policy.backend={args.policy_backend}"] if args.policy_backend else [])
    recipe = load_recipe(args.recipe, overrides)
    seed = recipe.seed if args.seed is None else args.seed
    if not args.bfcl and not args.simulated and args.tasks is None:
        raise UserError("eval", "nothing to evaluate: give --bfcl CATEGORY ..., --simulated N and/or --tasks [FILE]")
    tasks = None
    if args.tasks == "":
        if recipe.tasks is None or recipe.tasks.holdout <= 0:
            raise UserError("--tasks", f"{recipe.source} holds no tasks out (it needs a tasks section with holdout > 0): "
                                       "give --tasks FILE")
        tasks = (HELD_OUT, [])
    elif args.tasks is not None:
        from pathlib import Path

        if not Path(args.tasks).is_file():
            raise UserError("--tasks", f"file not found: {args.tasks}")
        tasks = (Path(args.tasks).name, read_tasks(args.tasks, need_tools=True))
        if recipe.tools.synthesize is None:  # its tool names, checked before any model loads
            from trustee_lite.env.pool.sources import preview_pool
            from trustee_lite.env.task_file import resolve

            resolve(tasks[1], preview_pool(recipe)[0])
    level = recipe.curriculum.initial_level if args.level is None else args.level
    if not 1 <= level <= 100:
        raise UserError("--level", f"must be between 1 and 100, got {level}")
    categories = bfcl.check_categories(args.bfcl) if args.bfcl else []
    adapters = [check_adapter(a, recipe.policy.backend) for a in args.adapter] or [recipe.policy.adapter]
    if args.base and None not in adapters:
        adapters.insert(0, None)
    plan = Plan(categories, args.limit, args.simulated or 0, level, args.max_new_tokens, recipe.curriculum, tasks)
    with Store(args.db) as store:
        started(args, "loading the policy")
        result = asyncio.run(evaluate(recipe, store, adapters, plan, seed))
    status = all_aborted_status(result)
    print_json(result, args.db)
    return status
