"""`report`: one self-contained HTML page (plots, evaluation scores, a trajectory browser) from
the run record; it opens offline in any browser."""

from __future__ import annotations

from trustee_lite.cli import add_db, print_json

HELP = "an HTML report of runs: per-step plots, evaluation scores and a trajectory browser"


def add_arguments(parser) -> None:
    add_db(parser, "the run record")
    parser.add_argument("--run", type=int, nargs="+", default=None, metavar="ID", help="only these runs (default: all)")
    parser.add_argument("--out", default=None, help="the HTML file to write (default: report.html beside the database)")
    parser.add_argument("--trajectories", type=int, default=5, metavar="N",
                        help="steps per training run whose episodes the page holds, spread evenly, first and last "
                             "included (default 5; 0: every step)")
    parser.add_argument("--figures", default=None, metavar="DIR", help="also write each plot as an SVG file in DIR")


def run(args) -> int:
    from pathlib import Path

    from trustee_lite.report.page import write_report

    written = write_report(args.db, args.run, Path(args.out) if args.out else None, args.trajectories,
                           Path(args.figures) if args.figures else None)
    print_json({**written, "report": str(Path(written["report"]).resolve())}, args.db)
    return 0
