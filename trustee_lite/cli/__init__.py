"""The commands, one module each: `add_arguments(parser)` declares its flags, `run(args)` runs it
and returns the exit status. Heavy packages are imported inside `run`."""

from __future__ import annotations

import argparse
import sys

DEFAULT_DB = "cache/trustee.sqlite"


def positive_number(kind, noun: str):
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


positive = positive_number(int, "a whole number")
positive_float = positive_number(float, "a number")


def add_db(parser: argparse.ArgumentParser, what: str = "the cache and run record") -> None:
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLite file for {what} (default: {DEFAULT_DB})")


def add_recipe(parser: argparse.ArgumentParser, seed_help: str | None = "run seed (default: the recipe's seed)") -> None:
    parser.add_argument("recipe", help="recipe YAML file")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a recipe setting, e.g. --set train.learning_rate=0 (repeatable)")
    if seed_help:
        parser.add_argument("--seed", type=int, default=None, help=seed_help)


def started(args, what: str) -> None:
    """What the command does, once what it was given has been checked: said by the heartbeat if
    nothing else is said for a while. The first line of a command that loads models is its first
    model's ("loading policy model ..."), before torch is imported; a mistake found before that
    (recipe, tool pool, database, a GPU the recipe needs) stays the only line."""
    from trustee_lite.progress import doing

    doing(" ".join(["trustee_lite", args.command, *([args.action] if getattr(args, "action", None) else []),
                    args.recipe]) + f": {what}", quiet=True)


def all_aborted_status(result: dict) -> int:
    """A command whose every episode aborted says why on stderr and exits 3 (`all_aborted`, the
    reasons with counts and causes, is taken out of the result); otherwise 0."""
    line = result.pop("all_aborted", None)
    if line:
        print(f"every episode aborted: {line}", file=sys.stderr)
        return 3
    return 0


def print_json(result: dict, db: str) -> None:
    """The command's result: one JSON line on stdout (paths in it absolute, the database's too)."""
    from pathlib import Path

    import orjson

    print(orjson.dumps({**result, "db": str(Path(db).resolve())}).decode(), flush=True)


