"""The README cannot fall behind: every `$ python -m trustee_lite ...` sample in it is run here
(shrunk with --set / --limit where it would take minutes), and the shape of what it prints
today (its lines and fields: numbers, durations and paths aside) must be the shape of the
sample, both ways: no sample line the command no longer prints, no line it prints that the
sample lacks. The CI recipe's cycle (recipes/ci.yaml: train 1 step, resume to 2, report, a
2-question eval) is among the samples, so it runs here too.

Not run: `calibrate` (about 55 simulator calls, 12 minutes on 2 cores; tests/test_calibration.py
checks its tables) and `sqlite3`. The GPU commands have no `$` sample (they need a GPU)."""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import time
from pathlib import Path

import pytest
from test_tools import reference_pool

from trustee_lite import progress
from trustee_lite.__main__ import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# Shrinks for samples that take minutes as shown: settings that change sizes, not the shape.
SHRINK = {
    "recipes/smoke.yaml --db": ["--set", "train.steps=2", "--set", "train.tasks_per_step=1",
                                "--set", "rollout.rollouts_per_task=2", "--set", "policy.max_new_tokens=16",
                                "--set", "simulator.max_new_tokens=96"],
    "simulate recipes/smoke.yaml": ["--episodes", "2", "--set", "rollout.rollouts_per_task=2",
                                    "--set", "policy.max_new_tokens=16", "--set", "simulator.max_new_tokens=96"],
    "eval recipes/smoke.yaml": ["--max-new-tokens", "16"],
}
# Lines a run prints or not by chance (whether any group had unequal rewards, or every episode
# of a step aborted): shape-checked when present, never required.
OPTIONAL = (re.compile(r"^no update in "), re.compile(r"^step # every episode aborted"))
BAR = re.compile(r"\d+%\||\| *\d+/\d+ \[")
NOT_RUN = ("trustee_lite calibrate",)


def samples() -> list[tuple[str, list[str]]]:
    """Each `$ python -m trustee_lite ...` line of the README's code blocks, with the lines shown
    under it (up to the next `$` line or the block's end)."""
    found, fenced, current = [], False, None
    for line in README.splitlines():
        if line.startswith("```"):
            fenced, current = not fenced, None
        elif fenced and line.startswith("$ "):
            current = (line[2:].split("  #")[0].strip(), [])
            found.append(current)
        elif fenced and current is not None:
            current[1].append(line)
    return [(cmd, out) for cmd, out in found if cmd.startswith("python -m trustee_lite")]


def shape(line: str):
    """A line with its numbers, durations and paths taken out; a JSON line's keys."""
    line = line.strip()
    if line.startswith("{"):
        return ("json", frozenset(re.findall(r'"(\w+)":', line)), "..." in line)
    line = re.sub(r"(?<![\w/])(?:/|\./|\w+/)[\w./@-]*", "P", line)  # paths
    line = re.sub(r"\b\d+h\d\dm\b|\b\d+m\d\ds\b|\b\d+(?:\.\d+)?s\b", "#s", line)  # durations
    line = re.sub(r"(?<![\w#])-?\d[\d,]*(?:\.\d+)?(?![\w])", "#", line)  # numbers
    line = re.sub(r"(?<=\s)-(?=\s|$)", "#", line)  # a figure not known: "loss -"
    line = re.sub(r"# (\w+?)s\b", r"# \1", line)  # "1 task", "2 tasks"
    return re.sub(r"\s+", " ", line)


def shapes(lines: list[str]) -> list:
    out = []
    for line in lines:
        for part in line.split("\r"):
            if part.strip() and part.strip() != "..." and not BAR.search(part):
                out.append(shape(part))
    return out


def same_shape(sample: list[str], printed: list[str]) -> list[str]:
    """What differs: sample lines not printed, printed lines not in the sample."""
    want, got = shapes(sample), shapes(printed)
    return ([f"the README shows {s!r}, the command no longer prints it" for s in want if not _found(s, got, shown=True)]
            + [f"the command prints {g!r}, the README does not show it" for g in got if not _found(g, want, shown=False)])


def _found(line, others: list, shown: bool) -> bool:
    """`line` (from the README when `shown`, else printed) has a match among `others`: an optional
    line always does; a JSON line matches one with the same keys (a sample's abbreviated `...`
    line: a subset of them)."""
    if not isinstance(line, tuple):
        return line in others or any(p.search(line) for p in OPTIONAL)
    return any(isinstance(o, tuple) and _keys_match(*((line, o) if shown else (o, line))) for o in others)


def _keys_match(shown, printed) -> bool:
    return shown[1] <= printed[1] if shown[2] else shown[1] == printed[1]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """Where the samples run: their paths (/tmp/smokerun, runs/ci, cache/) land here; the files
    the samples name (bad.yaml, recipe.yaml) are written here."""
    work = tmp_path_factory.mktemp("readme")
    (work / "recipes").symlink_to(ROOT / "recipes")
    (work / "bad.yaml").write_text("simulator:\n  max_new_tokens: -5\n")
    (work / "toolbench.json").write_text(json.dumps(reference_pool()))
    (work / "recipe.yaml").write_text("name: mine\ntools:\n  file: toolbench.json\n")
    return work


def arguments(cmd: str, work: Path) -> list[str]:
    """The sample's command line, its paths moved under `work`, shrunk where it takes minutes."""
    args = shlex.split(cmd.replace("/tmp/smokerun", str(work / "smokerun")))[3:]
    recipe = next((i for i, a in enumerate(args) if a.endswith(".yaml")), len(args) - 1)
    for key, extra in SHRINK.items():
        if cmd.startswith(f"python -m trustee_lite {key}"):  # before the sample's own settings, which win
            args = args[:recipe + 1] + extra + args[recipe + 1:]
    return args


def test_every_sample_of_the_readme_prints_what_it_shows(workdir, monkeypatch):
    """Each sample through the command line's own entry point, in this process (the imports and
    the converted model are paid once: a subprocess each took 60% longer), with its stdout and
    stderr caught as a terminal would show them."""
    monkeypatch.chdir(workdir)
    monkeypatch.setattr(progress, "HEARTBEAT_S", 1e9)  # no heartbeat line in a slow moment
    ran, problems, seconds = [], [], {}
    for cmd, shown in samples():
        if any(skip in cmd for skip in NOT_RUN):
            continue
        start = time.perf_counter()
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(arguments(cmd, workdir))
        seconds[cmd] = round(time.perf_counter() - start, 1)
        printed = err.getvalue().splitlines() + out.getvalue().splitlines()
        assert status in (0, 2, 3), (cmd, status, printed[-5:])
        problems += [f"{cmd}: {p}" for p in same_shape(shown, printed)]
        ran.append(cmd)
    print("seconds per sample:", json.dumps(seconds, indent=1))
    assert len(ran) >= 10, ran
    assert problems == [], "\n".join(problems)


def test_the_shape_of_a_line():
    assert shape("step 2/3: level 1->1 reward -1.000 loss - kl - | 91.5s (policy 68.1) | run ETA 1m35s") == \
        shape("step 1/2: level 4->7 reward 0.250 loss 0.0123 kl - | 8.0s (policy 1.1) | run ETA 12s")
    assert shape('{"run_id":1,"db":"/tmp/x.sqlite"}') == ("json", frozenset({"run_id", "db"}), False)
    assert shape("== /tmp/smoke_run/adapter") == shape("== /home/u/out/adapter")
    assert shape("success rate 0.00") != shape("success 0.00")
    assert same_shape(["a 1", "{\"x\":1,...}"], ["a 2", "{\"x\":3,\"y\":4}"]) == []
    assert same_shape(["a 1"], ["a 2", "b 3"]) == ["the command prints 'b #', the README does not show it"]
