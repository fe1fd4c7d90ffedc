"""`tasks import bfcl CATEGORY --out FILE` and `tasks import pool QUERIES --out FILE`: task sets
people already have, written as a tasks file (JSONL) and the tool file they use."""

from __future__ import annotations

import sys

from trustee_lite.cli import positive

HELP = "import task sets (BFCL categories, the reference pool format's queries) as a tasks file"


def add_arguments(parser) -> None:
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    imported = actions.add_parser("import", help="write a tasks file (and its tool file) from a task set")
    sources = imported.add_subparsers(dest="source", required=True, metavar="SOURCE")
    bfcl = sources.add_parser("bfcl", help="a BFCL single-turn category (needs bfcl-eval)")
    bfcl.add_argument("category", help="e.g. simple_python, multiple, parallel")
    bfcl.add_argument("--limit", type=positive, default=None, help="first N questions")
    pool = sources.add_parser("pool", help='the reference pool format\'s queries: [{"query": ..., "api_list": [...]}]')
    pool.add_argument("file", help="the queries file (JSON or YAML)")
    for sub in (bfcl, pool):
        sub.add_argument("--out", required=True, help="the tasks file to write (.jsonl)")
        sub.add_argument("--tools", default=None, metavar="FILE",
                         help="the tool file to write (default: beside --out, NAME.tools.json)")


def run(args) -> int:
    from pathlib import Path

    import orjson

    from trustee_lite.errors import UserError
    from trustee_lite.evaluation import task_import

    out = Path(args.out)
    if out.suffix != ".jsonl":
        raise UserError("--out", f"the tasks file is written as JSONL: give a name ending in .jsonl, got {args.out!r}")
    tools_out = Path(args.tools) if args.tools else out.with_name(f"{out.stem}.tools.json")
    if tools_out.suffix != ".json":
        raise UserError("--tools", f"the tool file is written as JSON: give a name ending in .json, got {args.tools!r}")
    if args.source == "bfcl":
        rows, tools = task_import.from_bfcl(args.category, args.limit)
    else:
        path = Path(args.file)
        if not path.is_file():
            raise UserError(args.file, "file not found")
        rows, tools = task_import.from_pool_queries(path)
    task_import.write(rows, tools, out, tools_out)
    result = task_import.summary(rows, tools, out, tools_out)
    use = f"tasks: {{file: {out}}}" + (f" and tools: {{file: {tools_out}}}" if result["tools_file"] else "")
    print(f"wrote {result['tasks']} tasks to {out}" + (f" and {result['tools']} tools to {tools_out}" if result["tools_file"] else "")
          + f"; in a recipe: {use}", file=sys.stderr)
    print(orjson.dumps(result).decode(), flush=True)
    return 0
