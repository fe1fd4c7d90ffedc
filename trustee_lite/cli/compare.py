"""`compare`: stored evaluation results, policy variants side by side."""

from __future__ import annotations

from trustee_lite.cli import add_db

HELP = "stored evaluation results, policy variants side by side, and simulator calibrations"


def add_arguments(parser) -> None:
    add_db(parser, "the run record")
    parser.add_argument("--run", type=int, nargs="+", default=None, metavar="ID", help="only these eval runs (default: all)")


def run(args) -> int:
    from trustee_lite.evaluation.tables import compare_view

    print(compare_view(args.db, args.run))
    return 0
