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


def duration(seconds: float) -> str:
    """4 s, 3m05s, 1h02m."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def run_eta(step_seconds: list[float], steps_after: int, elapsed: float, done: int, total: int) -> float | None:
    """Seconds left in a run: the rest of the current step plus `steps_after` more steps.

    A step is expected to take the median of the finished steps' times; before any step has
    finished, the current step's pace so far (`done` of its `total` episodes in `elapsed`
    seconds). None when there is nothing to go by yet."""
    if step_seconds:
        ordered = sorted(step_seconds)
        per_step = ordered[len(ordered) // 2] if len(ordered) % 2 else (ordered[len(ordered) // 2 - 1] + ordered[len(ordered) // 2]) / 2
    elif done > 0 and total > 0:
        per_step = elapsed * total / done
    else:
        return None
    return max(0.0, per_step - elapsed) + per_step * steps_after


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """"1 tool", "2 tools": a count with its noun (plural: an s, unless given)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
