"""The report's figures of runs that are not training runs (simulate, eval): one group of bars
per value, one bar per run, from data.episode_summaries. Each returns (title, svg), or
(title, None) when no such run has episodes."""

from __future__ import annotations

from trustee_lite.report.data import RunSeries
from trustee_lite.report.plots import _grouped_bars


def _bars(title: str, ylabel: str, runs: list[RunSeries], summaries: dict[int, dict], part: str):
    shown = [r for r in runs if r.id in summaries]
    if not shown:
        return title, None
    columns = {r.label: {k: float(v) for k, v in summaries[r.id][part].items()} for r in shown}
    rows = list(dict.fromkeys(k for cells in columns.values() for k in cells))
    return _grouped_bars(title, ylabel, rows, columns, digits=0 if part in ("rewards", "ends") else 1)


def rewards(runs, summaries):
    return _bars("Final rewards of finished episodes (simulate and eval runs)", "episodes", runs, summaries, "rewards")


def ends(runs, summaries):
    return _bars("How episodes ended (simulate and eval runs)", "episodes", runs, summaries, "ends")


def turns(runs, summaries):
    return _bars("Turns per episode, by kind (mean; simulate and eval runs)", "turns", runs, summaries, "turns")


def tokens(runs, summaries):
    return _bars("Tokens per episode in the policy's context, by who wrote them (mean; simulate and eval runs)",
                 "tokens", runs, summaries, "tokens")


RUN_PLOTS = (rewards, ends, turns, tokens)
