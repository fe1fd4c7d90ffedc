"""Stopping at once: the second Ctrl-C (or SIGTERM) sets one process-wide flag that the batch
loop checks at every token and the learner between micro-batches, so a worker thread in the
middle of a long batch ends within a token instead of finishing it (the process cannot exit
while a worker thread runs). The main thread gets a KeyboardInterrupt as usual; the run is
recorded `interrupted` and resumes from its last committed step."""

from __future__ import annotations

import signal
import threading

STOP = threading.Event()


class Stopped(KeyboardInterrupt):
    """Raised in a worker thread when the user stopped the command: a KeyboardInterrupt, so that
    no handler of ordinary errors takes it for a failed batch (which would retry it row by row)."""


def check() -> None:
    """Raise Stopped if the user asked to stop now."""
    if STOP.is_set():
        raise Stopped("stopped by the user")


def stop_now(signum=None, frame=None) -> None:
    """The handler of a Ctrl-C that means now (and of SIGTERM): flag the worker threads, then
    interrupt the main thread."""
    STOP.set()
    raise KeyboardInterrupt


def install() -> dict:
    """SIGINT and SIGTERM stop now; returns the handlers they had (for `restore`)."""
    STOP.clear()
    return {sig: signal.signal(sig, stop_now) for sig in (signal.SIGINT, signal.SIGTERM)}


def restore(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)
