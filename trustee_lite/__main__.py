"""Command line:
    python -m trustee_lite [train] RECIPE [--steps N] [--db PATH] [--out DIR] [--seed S] [--fresh]
    python -m trustee_lite simulate RECIPE [--episodes N] [--db PATH] [--seed S]
    python -m trustee_lite eval RECIPE [--bfcl CATEGORY ...] [--simulated N] [--adapter DIR ...] [--base] [--limit N]
    python -m trustee_lite compare [--db PATH] [--run ID ...]
    python -m trustee_lite check RECIPE [--gpu GIB]
    python -m trustee_lite calibrate RECIPE [--limit N] [--db PATH]
    python -m trustee_lite report [--db PATH] [--run ID ...] [--out FILE] [--trajectories N] [--figures DIR]
    python -m trustee_lite tools list RECIPE [--names] [--db PATH]
    python -m trustee_lite tools export RECIPE --out FILE [--db PATH]
    python -m trustee_lite tasks import bfcl CATEGORY --out FILE [--tools FILE] [--limit N]
    python -m trustee_lite tasks import pool QUERIES --out FILE [--tools FILE]
    python -m trustee_lite export RUN_OR_ADAPTER --to merged|gguf-lora|gguf [--quant q8_0|q4_k_m] [--out DIR] [--base-gguf FILE] [--db PATH]

One module per command under cli/. User errors print one line each on stderr and exit with
status 2; results print as one JSON line on stdout; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import logging
import os
import sqlite3
import sys

from trustee_lite import stopping
from trustee_lite.cli import calibrate, check, compare, export, report, simulate, tasks, tools, train
from trustee_lite.cli import eval as evaluate
from trustee_lite.errors import UserError
from trustee_lite.progress import idle, start_heartbeat

COMMANDS = {"train": train, "simulate": simulate, "eval": evaluate, "compare": compare, "check": check,
            "calibrate": calibrate, "report": report, "tools": tools, "tasks": tasks,
            "export": export}


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
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name, parents=[verbose], help=module.HELP))
    return parser


def _quiet_libraries() -> None:
    # Nothing is fetched from a model hub, and library progress bars stay out of our output.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")  # libraries' bars (GGUF conversion); ours pass disable=False


def _with_command(argv: list[str]) -> list[str]:
    """`python -m trustee_lite RECIPE ...` means `train RECIPE ...`."""
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] not in COMMANDS:
        return argv[:first] + ["train"] + argv[first:]
    return argv


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(_with_command(sys.argv[1:] if argv is None else list(argv)))
    start_heartbeat()  # a line at least every 15 s while a command works (progress.py)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    _quiet_libraries()
    previous = stopping.install()  # Ctrl-C and SIGTERM stop at once (train's first Ctrl-C waits for its step)
    try:
        return COMMANDS[args.command].run(args)
    except UserError as err:
        print(str(err), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; everything finished so far is recorded", file=sys.stderr)
        return 130
    except sqlite3.Error as err:  # after the store opened: a full disk, a lock past its timeout, a damaged page
        from trustee_lite.store import Store

        cause = (str(err).strip().splitlines() or [type(err).__name__])[0]
        print(f"database {Store.last or getattr(args, 'db', '')}: {cause} (SQLite); what was committed before is kept",
              file=sys.stderr)
        return 2
    finally:
        stopping.restore(previous)
        idle()  # nothing for the heartbeat to repeat once the command has ended


if __name__ == "__main__":
    sys.exit(main())
