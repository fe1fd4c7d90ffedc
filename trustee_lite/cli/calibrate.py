"""`calibrate RECIPE`: how far the recipe's simulator can be trusted, measured on gold cases
built from BFCL's multi-turn data (evaluation/calibration.py)."""

from __future__ import annotations

import asyncio
import sys

from trustee_lite.cli import add_db, add_recipe, positive, print_json, started

HELP = "measure the recipe's simulator (verifier, tool simulator) on gold cases from BFCL"


def add_arguments(parser) -> None:
    add_recipe(parser, seed_help=None)
    parser.add_argument("--limit", type=positive, default=6,
                        help="BFCL questions to build cases from, about 9 cases each (default: 6)")
    add_db(parser)


def run(args) -> int:
    from trustee_lite.config import load_recipe
    from trustee_lite.evaluation import bfcl
    from trustee_lite.evaluation.calibration import calibrate
    from trustee_lite.evaluation.tables import calibration_table
    from trustee_lite.store import Store

    recipe = load_recipe(args.recipe, args.overrides)
    bfcl.require("calibrate")
    with Store(args.db) as store:
        started(args, "building gold cases from BFCL and loading the simulator")
        result = asyncio.run(calibrate(recipe, store, args.limit))
    print(calibration_table(result["kinds"], result["simulator"]), file=sys.stderr)
    print_json({k: v for k, v in result.items() if k != "kinds"}, args.db)
    return 0
