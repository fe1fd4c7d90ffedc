"""User-facing progress: one place that draws bars (on stderr, so stdout stays machine-readable)."""

from __future__ import annotations

import sys

from tqdm import tqdm


def bar(total: int, desc: str, unit: str = "episode") -> tqdm:
    """A progress bar; redrawn often on a terminal, every few seconds in a log file."""
    interactive = sys.stderr.isatty()
    return tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=interactive,
        mininterval=0.2 if interactive else 10.0, leave=True, disable=False,
    )


def say(line: str) -> None:
    """One line for the user on stderr, without breaking a bar being drawn."""
    tqdm.write(line, file=sys.stderr)
