"""The report's figures, drawn by matplotlib as SVG text (text kept as text, so pages stay small
and searchable). Each function takes the runs (data.RunSeries) or stored results and returns
(title, svg), or (title, None) when it has nothing to draw: the page then shows the title and
why it is empty (WHY_EMPTY)."""

from __future__ import annotations

import io
from collections import defaultdict

from trustee_lite.evaluation.tables import column_name
from trustee_lite.report.data import RunSeries



def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no screen needed
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False,
                         "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3, "svg.hashsalt": "trustee"})
    return plt


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    _pyplot().close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg"):]  # drop the XML prologue and doctype: the SVG goes inline


def _figure(title: str, width: float = 6.4, height: float = 3.2, cols: int = 1):
    plt = _pyplot()
    fig, axes = plt.subplots(1, cols, figsize=(width, height), squeeze=False, sharey=True)
    fig.suptitle(title, fontsize=10)
    return fig, list(axes[0])


def _integer_ticks():
    from matplotlib.ticker import MaxNLocator

    return MaxNLocator(integer=True)


def _trained(runs: list[RunSeries]) -> list[RunSeries]:
    return [r for r in runs if r.steps]


def _colors(runs: list[RunSeries]) -> dict[int, str]:
    """One colour per group of runs that differ only by seed; line styles tell seeds apart."""
    groups: dict[str, str] = {}
    palette = [f"C{i}" for i in range(10)]
    out = {}
    for run in runs:
        out[run.id] = groups.setdefault(run.group, palette[len(groups) % len(palette)])
    return out


def _lines(title: str, ylabel: str, runs: list[RunSeries], series, ylim=None):
    runs = _trained(runs)
    if not runs:
        return title, None
    fig, (ax,) = _figure(title)
    colors = _colors(runs)
    styles = ["-", "--", ":", "-."]
    drawn = False
    for i, run in enumerate(runs):
        for name, values, style in series(run):
            points = [(s, v) for s, v in zip(run.steps, values) if v is not None]
            if not points:
                continue
            xs, ys = zip(*points)
            ax.plot(xs, ys, style or styles[i % len(styles)], marker="o",
                    markersize=3, color=colors[run.id], label=f"{run.label}{name}")
            drawn = True
    if not drawn:
        _pyplot().close(fig)
        return title, None
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(_integer_ticks())
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7, loc="best")
    return title, _svg(fig)


def valid_calls(runs):
    return _lines("Episodes with a well-formed tool call", "share of finished episodes", runs,
                  lambda r: [("", r.valid_call_rate, None)], ylim=(-0.05, 1.05))


def learning_signal(runs):
    return _lines("Groups with unequal rewards (the only ones GRPO learns from)", "share of task groups", runs,
                  lambda r: [("", r.signal_share, None)], ylim=(-0.05, 1.05))


def reward(runs):
    return _lines("Mean reward (verifier, finished episodes)", "mean reward", runs,
                  lambda r: [("", r.figures["mean_reward"], None)], ylim=(-1.05, 1.05))


def success(runs):
    return _lines("Curriculum signal (mean success reward): the step's and the rolling estimate", "signal (reward scale)",
                  runs, lambda r: [(" step", r.figures["signal"], "-"), (" rolling", r.figures["signal_rolling"], ":")],
                  ylim=(-1.05, 1.05))


def level(runs):
    return _lines("Curriculum level", "level", runs, lambda r: [("", r.figures["level"], None)])


def tokens(runs):
    return _lines("Tokens per step", "tokens", runs, lambda r: [(" policy", r.figures["policy_tokens"], "-"),
                                                                (" simulator", r.figures["simulator_tokens"], "--")])


def loss(runs):
    return _lines("Loss (steps with unequal rewards in a group)", "loss", runs,
                  lambda r: [("", r.figures["loss"], None)])


def gpu_busy(runs):
    return _lines("GPU utilisation over the step (NVML; absent on a CPU)", "percent busy", runs,
                  lambda r: [("", r.figures["gpu_util"], None)], ylim=(-2, 102))


def gpu_memory(runs):
    return _lines("GPU memory in use, the most at any moment of the step", "GiB", runs,
                  lambda r: [("", r.figures["gpu_mem_gib"], None)])


def _per_run_bars(title: str, ylabel: str, runs: list[RunSeries], parts_of):
    """Stacked bars per step, one panel per run (at most 4 panels)."""
    runs = _trained(runs)[:4]
    if not runs:
        return title, None
    fig, axes = _figure(title, width=max(6.4, 3.4 * len(runs)), cols=len(runs))
    drawn = False
    for ax, run in zip(axes, runs):
        bottom = [0.0] * len(run.steps)
        for i, (label, values) in enumerate(parts_of(run)):
            values = [v or 0 for v in values]
            if any(values):
                ax.bar(run.steps, values, bottom=bottom, label=label, color=f"C{i}")
                bottom = [b + v for b, v in zip(bottom, values)]
                drawn = True
        ax.set_title(run.label, fontsize=8)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(_integer_ticks())
    if not drawn:
        _pyplot().close(fig)
        return title, None
    axes[0].set_ylabel(ylabel)
    axes[0].legend(fontsize=7)
    return title, _svg(fig)


def aborts(runs):
    def parts(run):
        reasons = sorted({k for step in run.abort_reasons for k in step})
        return [(reason, [step.get(reason, 0) for step in run.abort_reasons]) for reason in reasons]
    return _per_run_bars("Aborted episodes by reason", "episodes", runs, parts)


def time_split(runs):
    return _per_run_bars("Time per step (policy generation and simulation can overlap)", "seconds", runs, time_parts)


def time_parts(run: RunSeries) -> list[tuple[str, list[float]]]:
    """A step's seconds by kind; steps recorded before the finer split (no prefill, decode,
    update or checkpoint figures) show their policy time as "policy, rest" and training as update."""
    f = run.figures

    def col(name):
        return [v or 0.0 for v in f[name]]

    prefill, decode = col("policy_prefill_s"), col("policy_decode_s")
    return [("policy prefill", prefill), ("policy decode", decode),
            ("policy, rest", [max(0.0, g - p - d) for g, p, d in zip(col("policy_gen_s"), prefill, decode)]),
            ("simulation", col("simulation_s")),
            ("update", [t if u is None else u for t, u in zip(col("training_s"), f["update_s"])]),
            ("checkpoint", col("checkpoint_s")), ("waiting", col("other_s"))]


def _grouped_bars(title: str, ylabel: str, rows: list[str], columns: dict[str, dict[str, float | None]], ylim=None,
                  digits: int = 2):
    """One group of bars per row (category), one bar per column (variant), each labelled with its
    value to `digits` decimals."""
    fig, (ax,) = _figure(title, width=max(6.4, 0.9 * len(rows) * max(1, len(columns)) ** 0.5 + 2))
    width = 0.8 / max(1, len(columns))
    for i, (column, cells) in enumerate(columns.items()):
        xs = [j + i * width for j in range(len(rows))]
        bars = ax.bar(xs, [cells.get(r) or 0 for r in rows], width=width, label=column, color=f"C{i}")
        ax.bar_label(bars, labels=["-" if cells.get(r) is None else f"{cells[r]:.{digits}f}" for r in rows], fontsize=7)
    ax.set_xticks([j + width * (len(columns) - 1) / 2 for j in range(len(rows))])
    ax.set_xticklabels(rows, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=7)
    return title, _svg(fig)


def evaluation(results: list[dict]):
    """BFCL accuracy and held-out mean reward, variants side by side (the newest result of each pair)."""
    title = "Evaluation: BFCL accuracy, held-out tasks' mean reward"
    results = [r for r in results if r["benchmark"] != "calibration"]
    if not results:
        return title, None
    columns: dict[str, dict[str, float | None]] = defaultdict(dict)
    for r in results:
        row = r["category"] if r["benchmark"] == "bfcl" else f"simulated {r['category']} (reward)"
        columns[f"{column_name(r)} (run {r['run_id']})"][row] = r["score"]
    rows = list(dict.fromkeys(row for cells in columns.values() for row in cells))
    return _grouped_bars(title, "score", rows, dict(columns),
                         ylim=(-1.05, 1.05) if any(r.startswith("simulated") for r in rows) else (0, 1.05))


def calibration(results: list[dict]):
    results = [r for r in results if r["benchmark"] == "calibration"]
    if not results:
        return None
    columns: dict[str, dict[str, float | None]] = defaultdict(dict)
    for r in results:
        columns[f"{column_name(r)} (run {r['run_id']})"][r["category"]] = r["score"]
    rows = list(dict.fromkeys(row for cells in columns.values() for row in cells))
    return _grouped_bars("Simulator calibration: accuracy by case kind", "accuracy", rows, dict(columns), ylim=(0, 1.05))


STEP_PLOTS = (valid_calls, reward, learning_signal, success, level, aborts, tokens, time_split, gpu_busy, gpu_memory, loss)

NO_TRAINING = "no committed training step in these runs (`python -m trustee_lite RECIPE` trains)"
# Why a plot that has training steps to draw from can still be empty.
WHY_EMPTY = {
    "aborts": "no episode aborted",
    "gpu_busy": "every step ran without an NVIDIA GPU (NVML gives these figures)",
    "gpu_memory": "every step ran without an NVIDIA GPU (NVML gives these figures)",
    "loss": "no step made an update: every group's rollouts scored alike (advantage 0) and there is no KL term",
    "evaluation": "no eval run in these runs (`python -m trustee_lite eval RECIPE --bfcl simple_python`)",
}
