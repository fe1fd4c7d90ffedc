"""The report page: the plots (inline SVG), a table of the runs, and the trajectory browser's
data as one JSON block. Everything from the run record is data: JSON with `<` escaped inside the
script block, text escaped in the HTML, and the browser sets it as text, never as markup, so
nothing a policy wrote can run or reshape the page."""

from __future__ import annotations

import html
import time
from importlib import resources
from pathlib import Path

import orjson

from trustee_lite.errors import UserError
from trustee_lite.progress import counted, doing
from trustee_lite.report import data, plots, run_plots
from trustee_lite.store import Store


def write_report(db: str, run_ids: list[int] | None, out: Path | None, trajectory_steps: int,
                 figures_dir: Path | None = None) -> dict:
    """`report`: the page of the database's runs (all, or `run_ids`) written to `out` (default:
    report.html beside the database); what was written."""
    out = out or Path(db).with_name("report.html")
    with Store.existing(db, "train, simulate or eval") as store:
        if trajectory_steps < 0:
            raise UserError("--trajectories", f"must be >= 0, got {trajectory_steps}")
        known = store.run_ids()
        if not known:
            raise UserError(db, "no runs recorded yet")
        missing = sorted(set(run_ids or ()) - set(known))
        if missing:
            raise UserError("--run", f"no run {', '.join(map(str, missing))} in {db} (runs: "
                            f"{', '.join(map(str, known))})")
        doing(f"trustee_lite report: drawing the plots of {counted(len(run_ids or known), 'run')}")
        page = build(store, run_ids, trajectory_steps, figures_dir)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as err:
        raise UserError(str(out), f"cannot write the report: {err.strerror or err}") from None
    return {"report": str(out), "bytes": len(page.encode()), "db": db}


def build(store: Store, run_ids: list[int] | None, trajectory_steps: int, figures_dir: Path | None = None) -> str:
    """The whole page as a string."""
    runs = data.runs(store, run_ids)
    scored = [r.id for r in runs if r.kind in ("eval", "calibrate")]
    results = store.eval_results(scored) if scored else []
    summaries = data.episode_summaries(store, runs)
    made = [(plot.__name__, plot(runs)) for plot in plots.STEP_PLOTS]
    made += [("evaluation", plots.evaluation(results))]
    made += [(f"episodes_{plot.__name__}", plot(runs, summaries)) for plot in run_plots.RUN_PLOTS]
    if (calibration := plots.calibration(results)) is not None:  # only where the database has results
        made.append(("calibration", calibration))
    drawn = [(name, svg) for name, (_, svg) in made if svg is not None]
    if figures_dir is not None:
        figures_dir.mkdir(parents=True, exist_ok=True)
        for name, svg in drawn:
            (figures_dir / f"{name}.svg").write_text(svg, encoding="utf-8")
    groups, sampled = _episode_groups(store, runs, trajectory_steps)
    body = [_runs_table(runs), '<h2 id="plots">Plots</h2><div class="plots">'
            + "".join(f'<div class="plot" id="plot-{name}">{svg}</div>' for name, svg in drawn) + "</div>"]
    empty = [(name, title) for name, (title, svg) in made if svg is None]
    if empty:
        trained = any(r.steps for r in runs)
        body.append('<p class="note">Empty plots:</p><ul class="empty-plots">' + "".join(
            f'<li id="plot-{name}"><b>{html.escape(title)}</b>: {html.escape(_why_empty(name, trained))}</li>'
            for name, title in empty) + "</ul>")
    page = resources.files("trustee_lite.report").joinpath("page.html").read_text(encoding="utf-8")
    meta = f"{store.path} · {len(runs)} runs · made {time.strftime('%Y-%m-%d %H:%M')}"
    for marker, value in (("__TITLE__", html.escape(f"trustee_lite report: {store.path.name}")),
                          ("__META__", html.escape(meta)), ("__SAMPLED__", html.escape(sampled)),
                          ("__BODY__", "\n".join(body)), ("__DATA__", script_json(groups))):
        page = page.replace(marker, value)
    return page


def _why_empty(name: str, trained: bool) -> str:
    if name.startswith("episodes_"):
        return "no simulate or eval run with episodes in these runs"
    if name in {plot.__name__ for plot in plots.STEP_PLOTS} and not trained:
        return plots.NO_TRAINING
    return plots.WHY_EMPTY.get(name, "no value recorded in these steps")


def script_json(value) -> str:
    """JSON that cannot end the script block it sits in (`<` as \\u003c)."""
    return orjson.dumps(value).decode().replace("<", "\\u003c")


def _runs_table(runs: list[data.RunSeries]) -> str:
    rows = "".join(
        f"<tr><td>{r.id}</td><td>{html.escape(r.kind)}</td><td>{html.escape(r.name)}</td><td>{r.seed}</td>"
        f"<td>{html.escape(r.status + (f': {r.failure}' if r.failure else ''))}</td>"
        f"<td>{len(r.steps) if r.steps else '-'}</td><td>{html.escape(r.label)}</td></tr>"
        for r in runs)
    return ('<h2 id="runs">Runs</h2><table class="runs"><tr><th>run</th><th>kind</th><th>name</th><th>seed</th>'
            f"<th>status</th><th>steps</th><th>label in the plots</th></tr>{rows}</table>")


def _episode_groups(store: Store, runs: list[data.RunSeries], trajectory_steps: int) -> tuple[list[dict], str]:
    """The browser's choices: one group per (run, step) of the sampled steps of a training run,
    one group per other run; and a sentence that says what was sampled."""
    groups, notes = [], []
    for run in runs:
        if run.kind == "train":
            steps = data.sample_steps(run.steps, trajectory_steps)
            if steps != run.steps:
                notes.append(f"run {run.id}: steps {', '.join(map(str, steps))} of {len(run.steps)}")
            tasks = data.episodes(store, run, steps) if steps else []
            for step in steps:
                groups.append({"title": f"run {run.id} {run.name}, step {step}",
                               "tasks": [t for t in tasks if t["step"] == step]})
        else:
            tasks = data.episodes(store, run, None)
            if tasks:
                groups.append({"title": f"run {run.id} {run.kind} {run.name}", "tasks": tasks})
    sampled = ("Trajectories of a sample of steps (" + "; ".join(notes) + "; --trajectories 0 keeps every step)."
               if notes else "Trajectories of every step.")
    return groups, sampled
