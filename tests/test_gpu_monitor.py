"""The GPU's utilisation and memory during a training step: sampled in the background, averaged
and peaked, recorded with the step, shown in its line and in the report; nothing on a CPU. (NVML
readings are scripted here: these machines have no GPU.)"""

from __future__ import annotations

import dataclasses
import time

from test_runstate import step_row

from trustee_lite.lm.gpu_monitor import GIB, GpuFigures, GpuMonitor
from trustee_lite.store import Store


class ScriptedMonitor(GpuMonitor):
    """Every NVML reading the same: 50% busy, 2 GiB in use."""

    def sample(self):
        return 50.0, 2.0 * GIB


def test_a_steps_figures_are_the_mean_utilisation_and_the_most_memory():
    assert GpuFigures.of([(20.0, 1 * GIB), (80.0, 3 * GIB), (50.0, 2 * GIB)]) == GpuFigures(50.0, 3.0)
    monitor = ScriptedMonitor(0, interval_s=0.01)
    monitor.start()
    deadline = time.monotonic() + 10
    while len(monitor._samples) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert monitor.stop() == GpuFigures(50.0, 2.0) and len(monitor._samples) >= 3
    assert monitor._thread is None  # the sampling thread ended with the step
    assert ScriptedMonitor(0).stop() == GpuFigures(50.0, 2.0)  # a step too short for the thread: one reading


def test_a_cpu_backend_offers_no_monitor(smol_backend):
    assert smol_backend.gpu_monitor() is None


def test_the_step_line_and_the_report_show_the_gpu_and_a_cpu_step_shows_none(tmp_path):
    from trustee_lite.report.page import build
    from trustee_lite.train.loop import _summary_line

    record = step_row(1, 1, tmp_path)
    figures = {"mean_reward": 0.5, "success_rate": 0.5, "aborted": 0, "episodes": 4}
    split = record.times.__dict__
    assert _summary_line(2, record, figures, split, GpuFigures(63.4, 8.5)).endswith(
        "| GPU 63% busy, 8.5 GiB")
    assert "GPU" not in _summary_line(2, record, figures, split)
    with Store(tmp_path / "db.sqlite") as store:
        run = store.start_run("train", "on-a-gpu", 0, {})
        store.add_step(run, dataclasses.replace(record, gpu_util=63.4, gpu_mem_gib=8.5))
        store.add_step(run, dataclasses.replace(step_row(2, 4, tmp_path), gpu_util=71.0, gpu_mem_gib=9.1))
        cpu = store.start_run("train", "on-a-cpu", 0, {})
        store.add_step(cpu, step_row(1, 1, tmp_path))
        assert store.db.execute("SELECT gpu_util, gpu_mem_gib FROM steps ORDER BY id").fetchall() == [
            (63.4, 8.5), (71.0, 9.1), (None, None)]
        assert 'id="plot-gpu_busy"' in build(store, [run], 0) and 'id="plot-gpu_memory"' in build(store, [run], 0)
        assert '<div class="plot" id="plot-gpu_' not in build(store, [cpu], 0)
        assert '<li id="plot-gpu_busy"><b>' in build(store, [cpu], 0)  # listed as empty, with why
