"""Command line:
    python -m trustee_lite [train] RECIPE [--steps N] [--db PATH] [--out DIR] [--seed S] [--fresh]
    python -m trustee_lite simulate RECIPE [--episodes N] [--db PATH] [--seed S]
    python -m trustee_lite eval RECIPE [--bfcl CATEGORY ...] [--simulated N] [--adapter DIR ...] [--base] [--limit N]
    python -m trustee_lite compare [--db PATH] [--run ID ...]
    python -m trustee_lite check RECIPE [--gpu GIB]

User errors print one line on stderr and exit with status 2; results print as one JSON line on
stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys

DEFAULT_DB = "cache/trustee.sqlite"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trustee_lite",
        description="TRUSTEE on one machine: tool-calling RL in environments simulated by one local model.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details to stderr")
    # -v after the command too; SUPPRESS so the command's default does not undo a -v before it
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log progress details to stderr")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    train = commands.add_parser("train", parents=[verbose], help="train the policy (the default command: RECIPE alone means train RECIPE)")
    train.add_argument("recipe", help="recipe YAML file")
    train.add_argument("--steps", type=_positive, default=None, help="total training steps (default: the recipe's train.steps)")
    train.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file for the cache and run record (default: {DEFAULT_DB})")
    train.add_argument("--out", default=None, help="folder for checkpoints and the adapter (default: runs/<recipe name>)")
    train.add_argument("--seed", type=int, default=None, help="run seed (default: the recipe's seed)")
    train.add_argument("--fresh", action="store_true", help="start over instead of resuming the run in --out")
    sim = commands.add_parser("simulate", parents=[verbose], help="run episodes of the policy in the simulated environment")
    sim.add_argument("recipe", help="recipe YAML file")
    sim.add_argument("--episodes", type=_positive, default=None, help="episodes to run (default: the recipe's simulate.episodes)")
    sim.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file for the cache and run record (default: {DEFAULT_DB})")
    sim.add_argument("--seed", type=int, default=None, help="run seed (default: the recipe's seed)")
    ev = commands.add_parser("eval", parents=[verbose], help="score the policy (base or adapters) on BFCL and on held-out simulated tasks")
    ev.add_argument("recipe", help="recipe YAML file (its policy model is evaluated)")
    ev.add_argument("--bfcl", nargs="+", default=[], metavar="CATEGORY",
                    help="BFCL v4 categories, e.g. simple_python multiple parallel (or: all)")
    ev.add_argument("--adapter", action="append", default=[], metavar="DIR",
                    help="a LoRA adapter folder to evaluate (repeatable; default: the recipe's policy as it is)")
    ev.add_argument("--base", action="store_true", help="evaluate the base model too, next to the adapters")
    ev.add_argument("--limit", type=_positive, default=None, help="first N items of each BFCL category")
    ev.add_argument("--simulated", type=_positive, default=None, metavar="N", help="N held-out simulated tasks")
    ev.add_argument("--level", type=int, default=None, help="their difficulty level (default: the recipe's initial level)")
    ev.add_argument("--max-new-tokens", type=_positive, default=256, help="per answer (default: 256)")
    ev.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file for the cache and run record (default: {DEFAULT_DB})")
    ev.add_argument("--seed", type=int, default=None, help="seed of the held-out tasks (default: the recipe's seed)")
    chk = commands.add_parser("check", parents=[verbose], help="preflight: model files, chat template, token budget, "
                              "memory estimate; loads no weights")
    chk.add_argument("recipe", help="recipe YAML file")
    chk.add_argument("--gpu", type=_positive_float, default=None, metavar="GIB",
                     help="compare the memory estimate with a card of this many GiB (default: this machine's GPU)")
    cmp = commands.add_parser("compare", parents=[verbose], help="stored evaluation results, policy variants side by side")
    cmp.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file with the run record (default: {DEFAULT_DB})")
    cmp.add_argument("--run", type=int, nargs="+", default=None, metavar="ID", help="only these eval runs (default: all)")
    return parser


def _positive_number(kind, noun: str):
    """An argparse type: a number of `kind` above zero."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {value:g}")
        return value
    return parse


_positive = _positive_number(int, "a whole number")
_positive_float = _positive_number(float, "a number")


def _quiet_libraries() -> None:
    # Nothing is fetched from a model hub, and library progress bars stay out of our output.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' bars (GGUF conversion); ours pass disable=False


COMMANDS = ("train", "simulate", "eval", "compare", "check")


def _with_command(argv: list[str]) -> list[str]:
    """`python -m trustee_lite RECIPE ...` means `train RECIPE ...`."""
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] not in COMMANDS:
        return argv[:first] + ["train"] + argv[first:]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_with_command(sys.argv[1:] if argv is None else list(argv)))
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    from .errors import UserError

    try:
        return _run(args)
    except UserError as err:
        print(str(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything finished so far is recorded", file=sys.stderr)
        return 130


def _run(args) -> int:
    import orjson

    from .recipe import load_recipe
    from .store import Store

    if args.command == "compare":
        return _compare(args)
    recipe = load_recipe(args.recipe)
    if args.command == "check":
        return _check(recipe, args.gpu)
    seed = recipe.seed if args.seed is None else args.seed
    if args.command == "eval":
        return _eval(args, recipe, seed)
    if args.command == "simulate":
        from .engine import simulate

        with Store(args.db) as store:
            summary = asyncio.run(simulate(recipe, store, args.episodes or recipe.simulate.episodes, seed))
        summary["db"] = args.db
        print(orjson.dumps(summary).decode(), flush=True)
        return 0
    from pathlib import Path

    from .trainer import train

    out_dir = Path(args.out or Path("runs") / recipe.name).resolve()
    with Store(args.db) as store:
        summary = asyncio.run(train(recipe, store, out_dir, seed, args.steps, args.fresh))
    summary["db"] = args.db
    print(orjson.dumps(summary).decode(), flush=True)
    return 130 if summary["status"] == "interrupted" else 0


def _eval(args, recipe, seed: int) -> int:
    import orjson

    from . import bfcl
    from .errors import UserError
    from .evaluate import Plan, check_adapter, evaluate
    from .store import Store

    if not args.bfcl and not args.simulated:
        raise UserError("eval", "nothing to evaluate: give --bfcl CATEGORY ... and/or --simulated N")
    level = recipe.curriculum.initial_level if args.level is None else args.level
    if not 1 <= level <= 100:
        raise UserError("--level", f"must be between 1 and 100, got {level}")
    categories = bfcl.check_categories(args.bfcl) if args.bfcl else []
    adapters = [check_adapter(a) for a in args.adapter] or [recipe.policy.adapter]
    if args.base and None not in adapters:
        adapters.insert(0, None)
    plan = Plan(categories, args.limit, args.simulated or 0, level, args.max_new_tokens, recipe.curriculum)
    with Store(args.db) as store:
        result = asyncio.run(evaluate(recipe, store, adapters, plan, seed))
        if len(adapters) > 1:
            from .scores import compare_table

            print(compare_table(store.eval_results([v["run_id"] for v in result["variants"]])), file=sys.stderr)
    result["db"] = args.db
    print(orjson.dumps(result).decode(), flush=True)
    return 0


def _check(recipe, gpu_gib: float | None) -> int:
    from .check import format_table, missing_models, run_check

    missing = missing_models(recipe)
    if missing:
        print("\n".join(missing), file=sys.stderr)
        return 2
    rows, problems = run_check(recipe, gpu_gib)
    print(format_table(rows), flush=True)
    for problem in problems:
        print(f"{recipe.source}: {problem}", file=sys.stderr)
    print("the recipe can run" if not problems else "the recipe cannot run as it is", file=sys.stderr)
    return 0 if not problems else 2


def _compare(args) -> int:
    from pathlib import Path

    from .errors import UserError
    from .scores import compare_table
    from .store import Store

    if not Path(args.db).is_file():
        raise UserError(args.db, "no such database (run eval first)")
    with Store(args.db) as store:
        results = store.eval_results(args.run)
    if not results:
        raise UserError(args.db, "no evaluation results" + (f" for runs {args.run}" if args.run else "") + " (run eval first)")
    print(compare_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
