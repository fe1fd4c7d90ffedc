"""Progress a user can see: the first line before any heavy import, a heartbeat line when
nothing else has been written for a while (with the count of what is being done), and a bar's
ETA remade by the heartbeat."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from trustee_lite import progress

ROOT = Path(__file__).resolve().parents[1]


def test_the_first_line_comes_before_torch_is_imported():
    code = textwrap.dedent("""
        import sys

        class Spy:  # stderr, noting whether torch was imported when the first line was written
            def __init__(self, stream):
                self.stream, self.first = stream, None
            def write(self, text):
                if self.first is None and text.strip():
                    self.first = text.strip()
                    print(repr((self.first, "torch" in sys.modules)), flush=True)
                return self.stream.write(text)
            def __getattr__(self, name):
                return getattr(self.stream, name)

        sys.stderr = Spy(sys.stderr)
        from trustee_lite.__main__ import main
        status = main(["check", "recipes/smoke.yaml"])
        print(repr(("end", "torch" in sys.modules, status)))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    first, end = [eval(line) for line in done.stdout.splitlines() if line.startswith(("('", '("'))]
    assert first == ("smoke.yaml: reading the policy's config and tokenizer (no weights)", False), \
        done.stderr[-2000:]
    assert end == ("end", True, 0)  # the command did import torch, after


def test_the_heartbeat_repeats_what_is_being_done(monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 15.0)
    activity = progress.doing("step 1/3: drafting 4 tasks at level 1", 4, quiet=True)
    now = progress.NOW.last = time.monotonic()
    assert progress.heartbeat_line(now + 14) is None  # something was written less than 15 s ago
    activity.done = 3
    progress.NOW.last = now - 60  # the last line long ago: still, the activity began just now
    assert progress.heartbeat_line(now + 1) is None
    assert progress.heartbeat_line(now + 16).startswith("step 1/3: drafting 4 tasks at level 1: 3 of 4 done (")


def test_the_heartbeat_remakes_a_quiet_bars_postfix(monkeypatch):
    monkeypatch.setattr(progress, "HEARTBEAT_S", 15.0)
    calls = []
    bar = progress.bar(8, "step 2/3", postfix=lambda: calls.append(1) or "run ETA 1m05s")
    try:
        bar.last_print_t = time.time() - 20  # the bar has not moved for 20 s
        progress.NOW.last = time.monotonic() - 20
        assert progress.heartbeat_line(time.monotonic()) == "step 2/3: 0 of 8 episodes done, run ETA 1m05s"
        assert calls  # the ETA was made anew, not the one from the bar's last move
    finally:
        bar.close()
    assert progress.NOW.bar is None
