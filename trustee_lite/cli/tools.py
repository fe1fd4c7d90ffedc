"""`tools list RECIPE` and `tools export RECIPE --out FILE`: the recipe's tool pool, from all its
sources, as a table, or as one tool file (synthesized toolsets included)."""

from __future__ import annotations

import sys

from trustee_lite.cli import add_db, add_recipe, print_json, started

HELP = "show the recipe's tool pool (list) or write it as one tool file (export)"


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    shown = actions.add_parser("list", help="categories, toolsets, tool counts and what loading changed")
    add_recipe(shown, seed_help=None)
    shown.add_argument("--names", action="store_true", help="also list every tool, with its source's name when renamed")
    add_db(shown, "the stored synthesized toolsets")
    export = actions.add_parser("export", help="write the pool as a tool file (writes missing synthesized toolsets first)")
    add_recipe(export, seed_help=None)
    export.add_argument("--out", required=True, help="the tool file to write (.json, .yaml or .yml)")
    add_db(export, "the synthesized toolsets and the simulator's cache")


def run(args) -> int:
    import asyncio
    from pathlib import Path

    from trustee_lite.config import load_recipe
    from trustee_lite.env.pool.sources import pool_listing
    from trustee_lite.runtime import export_pool
    from trustee_lite.store import Store

    recipe = load_recipe(args.recipe, args.overrides)
    with Store(args.db) as store:
        if args.action == "list":
            print(pool_listing(recipe, store, args.names), flush=True)
            return 0
        started(args, f"writing the pool to {args.out}")
        result = asyncio.run(export_pool(recipe, store, Path(args.out)))
    print(f"wrote {result['out']}", file=sys.stderr)
    print_json(result, args.db)
    return 0
