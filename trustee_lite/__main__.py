"""Command line: python -m trustee_lite simulate RECIPE [--episodes N] [--db PATH] [--seed S]

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
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sim = commands.add_parser("simulate", help="run episodes of the policy in the simulated environment")
    sim.add_argument("recipe", help="recipe YAML file")
    sim.add_argument("--episodes", type=_positive, default=None, help="episodes to run (default: the recipe's simulate.episodes)")
    sim.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file for the cache and run record (default: {DEFAULT_DB})")
    sim.add_argument("--seed", type=int, default=None, help="run seed (default: the recipe's seed)")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {value}")
    return value


def _quiet_libraries() -> None:
    # Nothing is fetched from a model hub, and library progress bars stay out of our output.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' bars (GGUF conversion); ours pass disable=False


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
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

    recipe = load_recipe(args.recipe)
    seed = recipe.seed if args.seed is None else args.seed
    if args.command == "simulate":
        from .engine import simulate

        with Store(args.db) as store:
            summary = asyncio.run(simulate(recipe, store, args.episodes or recipe.simulate.episodes, seed))
        summary["db"] = args.db
        print(orjson.dumps(summary).decode(), flush=True)
        return 0
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
