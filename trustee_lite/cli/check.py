"""`check RECIPE`: a preflight that loads no weights and needs no GPU (trustee_lite/check.py).

One table on stdout; exit 0 when the recipe can run, 2 otherwise (each problem one line on stderr).
"""

from __future__ import annotations

import sys

from trustee_lite.cli import add_recipe, positive_float

HELP = "preflight: model files, chat template, token budget, memory estimate; loads no weights"


def add_arguments(parser) -> None:
    add_recipe(parser, seed_help=None)
    parser.add_argument("--gpu", type=positive_float, default=None, metavar="GIB",
                        help="compare the memory estimate with a card of this many GiB (default: this machine's GPU)")


def run(args) -> int:
    from trustee_lite.check import check_recipe
    from trustee_lite.config import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    report = check_recipe(recipe, args.gpu)
    if report.rows:
        print(report.table(), flush=True)
    for problem in report.problems:
        print(problem, file=sys.stderr)
    if report.rows:
        print("the recipe can run" if not report.problems else "the recipe cannot run as it is", file=sys.stderr)
    return 0 if not report.problems else 2
