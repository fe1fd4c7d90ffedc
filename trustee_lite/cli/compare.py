"""`compare`: stored evaluation results, policy variants side by side."""

from __future__ import annotations

from pathlib import Path

from trustee_lite.cli import add_db

HELP = "stored evaluation results, policy variants side by side, and simulator calibrations"


def add_arguments(parser) -> None:
    add_db(parser, "the run record")
    parser.add_argument("--run", type=int, nargs="+", default=None, metavar="ID", help="only these eval runs (default: all)")


def run(args) -> int:
    from trustee_lite.errors import UserError
    from trustee_lite.evaluation.tables import calibration_table, compare_table
    from trustee_lite.store import Store

    if not Path(args.db).is_file():
        raise UserError(args.db, "no such database (run eval first)")
    with Store(args.db) as store:
        results = store.eval_results(args.run)
    if not results:
        raise UserError(args.db, "no evaluation results" + (f" for runs {args.run}" if args.run else "")
                        + " (run eval or calibrate first)")
    print(compare_table(results))
    calibrations: dict[int, list[dict]] = {}
    for r in results:
        if r["benchmark"] == "calibration":
            calibrations.setdefault(r["run_id"], []).append(r)
    for run_id, kinds in calibrations.items():  # each simulator's report in full
        print(f"\nrun {run_id}: " + calibration_table(kinds, kinds[0]["figures"]["simulator"]).removeprefix("== "))
    return 0
