"""User-facing progress: one place that draws bars and says lines (on stderr, so stdout stays
machine-readable), and a heartbeat, so that a slow machine never looks like a hung one.

`doing(text)` names what the command is doing now (loading a model, drafting tasks, with a
count where there is one). A heartbeat thread repeats it, with the time it has taken, whenever
nothing has been written for `HEARTBEAT_S` seconds; while a bar is drawn it redraws the bar
instead (with its postfix made anew: the ETA moves even when no episode has finished).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass

from tqdm import tqdm

HEARTBEAT_S = float(os.environ.get("TRUSTEE_LITE_HEARTBEAT_S", "15"))


@dataclass
class Activity:
    """What the command is doing now; `done` of `total` when it counts something."""

    text: str
    total: int | None = None
    done: int = 0
    started: float = 0.0

    def line(self, now: float) -> str:
        counted_part = f": {self.done} of {self.total} done" if self.total is not None else ""
        return f"{self.text}{counted_part} ({duration(now - self.started)} so far)"


class _Now:
    """The current activity and bar, and when stderr was last written (the heartbeat's state)."""

    def __init__(self):
        self.activity: Activity | None = None
        self.bar: tqdm | None = None
        self.postfix = None  # () -> str, the active bar's postfix
        self.last = time.monotonic()
        self.lock = threading.Lock()


NOW = _Now()


def bar(total: int, desc: str, unit: str = "episode", postfix=None) -> tqdm:
    """A progress bar; redrawn often on a terminal, every few seconds in a log file, and by the
    heartbeat when nothing moves. `postfix()` gives the text beside it (made anew on redraw)."""
    interactive = sys.stderr.isatty()
    progress = tqdm(
        total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=interactive,
        mininterval=0.2 if interactive else 10.0, leave=True, disable=False,
    )
    with NOW.lock:
        NOW.bar, NOW.postfix, NOW.last = progress, postfix, time.monotonic()
    original_close = progress.close

    def close() -> None:
        with NOW.lock:
            if NOW.bar is progress:
                NOW.bar, NOW.postfix, NOW.last = None, None, time.monotonic()
        original_close()

    progress.close = close
    return progress


def say(line: str) -> None:
    """One line for the user on stderr, without breaking a bar being drawn."""
    tqdm.write(line, file=sys.stderr)
    NOW.last = time.monotonic()


def doing(text: str, total: int | None = None, quiet: bool = False) -> Activity:
    """Name what the command does now (said at once unless `quiet`); the heartbeat repeats it.
    Count with the returned activity's `done`."""
    activity = Activity(text, total, started=time.monotonic())
    NOW.activity = activity
    if not quiet:
        say(text + ("" if total is None else f" (0 of {total})"))
    return activity


def idle() -> None:
    """Nothing is being done: the heartbeat stays quiet."""
    NOW.activity = None


def resume(activity: Activity) -> None:
    """Make an activity started quietly (work done ahead) the current one again."""
    NOW.activity = activity


def heartbeat_line(now: float) -> str | None:
    """What the heartbeat says at `now`, if it is due: nothing while output is fresh."""
    with NOW.lock:
        progress, postfix = NOW.bar, NOW.postfix
    if progress is not None:
        last = max(NOW.last, time.monotonic() - (time.time() - progress.last_print_t))
        if now - last < HEARTBEAT_S:
            return None
        text = postfix() if postfix is not None else ""
        return f"{progress.desc}: {progress.n} of {progress.total} {progress.unit}s done" + (f", {text}" if text else "")
    if NOW.activity is None or now - max(NOW.last, NOW.activity.started) < HEARTBEAT_S:
        return None  # said (or begun) less than HEARTBEAT_S ago
    return NOW.activity.line(now)


def _beat() -> None:
    while True:
        time.sleep(min(1.0, HEARTBEAT_S / 4))
        line = heartbeat_line(time.monotonic())
        if line is None:
            continue
        progress = NOW.bar
        if progress is not None and sys.stderr.isatty():
            if NOW.postfix is not None:
                progress.set_postfix_str(NOW.postfix(), refresh=False)
            progress.refresh()
            NOW.last = time.monotonic()
        else:
            say(line)


_started = False


def start_heartbeat() -> None:
    """Start the heartbeat thread (once; it ends with the process)."""
    global _started
    if not _started:
        _started = True
        threading.Thread(target=_beat, name="trustee-lite-heartbeat", daemon=True).start()


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
    seconds). A step already longer than the median counts its rest at its own pace once some
    of its episodes are done (never 0 while it runs). None when there is nothing to go by."""
    pace = elapsed * total / done if done > 0 and total > 0 else None
    if step_seconds:
        ordered = sorted(step_seconds)
        half = len(ordered) // 2
        per_step = ordered[half] if len(ordered) % 2 else (ordered[half - 1] + ordered[half]) / 2
    elif pace is not None:
        per_step = pace
    else:
        return None
    current = per_step - elapsed
    if current <= 0:  # this step runs long: its own pace, or one more second while nothing is done
        current = max(pace - elapsed, 1.0) if pace is not None else 1.0
    return current + per_step * steps_after


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """"1 tool", "2 tools": a count with its noun (plural: an s, unless given)."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"
