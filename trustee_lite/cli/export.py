"""`export RUN_OR_ADAPTER --to merged [--out DIR]`: a trained policy as a folder other tools load."""

from __future__ import annotations

from trustee_lite.cli import add_db

HELP = "write a trained policy for other tools (merged: a transformers folder, the adapter merged in)"


def add_arguments(parser) -> None:
    parser.add_argument("target", metavar="RUN_OR_ADAPTER",
                        help="a training run's id or name in the database, or an adapter folder a run wrote")
    parser.add_argument("--to", choices=("merged",), required=True, help="merged: the base with the adapter merged in")
    parser.add_argument("--out", default=None, help="the folder to write (default: OUT/export-merged beside the run's adapter)")
    add_db(parser, "the run record")


def run(args) -> int:
    import sys
    from pathlib import Path

    from trustee_lite.cli import print_json
    from trustee_lite.errors import UserError
    from trustee_lite.export.merged import export_merged
    from trustee_lite.export.source import find
    from trustee_lite.progress import doing

    source = find(args.target, args.db)
    out = Path(args.out) if args.out else source.out_dir / f"export-{args.to}"
    if out.exists() and any(out.iterdir()):
        raise UserError("--out", f"{out} is not empty: give a new folder (nothing is overwritten)")
    doing(f"trustee_lite export {args.target}: {args.to}", quiet=True)
    result = export_merged(source, out)
    print(f"wrote {out} ({result['weights_mb']:,} MB of {result['dtype']} weights, run {source.run_id} step "
          f"{source.step if source.step is not None else '?'}); load it with AutoModelForCausalLM.from_pretrained"
          f"('{out}') or serve it: vllm serve {out}", file=sys.stderr)
    print_json(result, args.db)
    return 0
