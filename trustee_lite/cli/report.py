"""`report`: one self-contained HTML page (plots, evaluation scores, a trajectory browser) from
the run record; it opens offline in any browser."""

from __future__ import annotations

from pathlib import Path

from trustee_lite.cli import add_db

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
    import orjson

    from trustee_lite.errors import UserError
    from trustee_lite.report.page import build
    from trustee_lite.store import Store

    if not Path(args.db).is_file():
        raise UserError(args.db, "no such database (run train, simulate or eval first)")
    if args.trajectories < 0:
        raise UserError("--trajectories", f"must be >= 0, got {args.trajectories}")
    out = Path(args.out) if args.out else Path(args.db).with_name("report.html")
    with Store(args.db) as store:
        known = {row[0] for row in store.db.execute("SELECT id FROM runs")}
        if not known:
            raise UserError(args.db, "no runs recorded yet")
        missing = sorted(set(args.run or ()) - known)
        if missing:
            raise UserError("--run", f"no run {', '.join(map(str, missing))} in {args.db} (runs: "
                            f"{', '.join(map(str, sorted(known)))})")
        page = build(store, args.run, args.trajectories, Path(args.figures) if args.figures else None)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as err:
        raise UserError(str(out), f"cannot write the report: {err.strerror or err}") from None
    print(orjson.dumps({"report": str(out), "bytes": len(page.encode()), "db": args.db}).decode())
    return 0
