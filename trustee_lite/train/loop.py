"""The learning loop (docs/method.md, Stage III): tasks at the curriculum's level -> rollouts ->
verifier rewards -> GRPO update of the LoRA adapter -> checkpoint -> curriculum move.

A step is committed when its row lands in the `steps` table; its checkpoint is written just
before. A run killed at any moment resumes from the last committed step (checkpoints.py). Tasks
for step k + 1 are generated while step k trains (tasks only: every trajectory comes from the
current policy).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from trustee_lite import stopping
from trustee_lite.config import Recipe
from trustee_lite.env.knobs import knobs_at
from trustee_lite.lm.gpu_monitor import GpuFigures
from trustee_lite.metrics import all_aborted, episode_figures, mean, rounded, time_split
from trustee_lite.progress import Activity, counted, doing, duration, resume, run_eta, say
from trustee_lite.records import StepRecord, StepTimes, TaskDraft, Trajectory
from trustee_lite.runtime import Run, Runtime, open_runtime, preflight, recorded_run
from trustee_lite.store import Store
from trustee_lite.train.checkpoints import (
    RunState,
    begin_run,
    checkpoint_dir,
    export_adapter,
    plan_run,
    prune_checkpoints,
)
from trustee_lite.train.curriculum import move_level
from trustee_lite.train.grpo import step_advantages, training_samples
from trustee_lite.train.learner import Learner
from trustee_lite.train.trackers import Trackers, check_installed

log = logging.getLogger(__name__)


async def train(recipe: Recipe, store: Store, out_dir: Path, seed: int, steps: int | None, fresh: bool) -> dict:
    """Train (or resume training) for the recipe's steps, or `steps`; return the summary."""
    preflight(recipe)
    check_installed(recipe.train.report_to, recipe.source)
    start = time.perf_counter()
    state = plan_run(store, recipe, out_dir, seed, fresh)  # a resume error shows before models load
    total = steps or recipe.train.steps
    if state.run_id is not None and state.next_step > total:
        return finished_run(store, state, out_dir, total)
    async with open_runtime(recipe, store) as runtime:
        # the run is written once the tool pool and the models are known good
        state = begin_run(store, recipe, out_dir, seed, fresh, state)
        if state.next_step > 1:
            say(f"resuming run {state.run_id} at step {state.next_step} (level {state.level}"
                + (f"; {state.discarded} trajectories of the unfinished step dropped" if state.discarded else "") + ")")
        with recorded_run(store, "train", recipe, seed, run_id=state.run_id) as run:
            store.set_tool_names(state.run_id, runtime.pool.original_names)
            return await run_training(runtime, run, state, out_dir, seed, steps or recipe.train.steps, start)


def finished_run(store: Store, state: RunState, out_dir: Path, total: int) -> dict:
    """A run that already has its steps: said so, with how to go on, and its recorded summary;
    no model is loaded."""
    done = state.next_step - 1
    say(f"run {state.run_id} in {out_dir} is finished: {done} of {counted(total, 'step')} done; to train it further, "
        f"run again with --steps {done + 1} or more (or --set train.steps=N); to start another, --out DIR or --fresh")
    last = store.last_step(state.run_id)
    adapter = out_dir / "adapter"
    if not (adapter / "adapter_model.safetensors").is_file():  # a run stopped between its last commit and the copy
        adapter = export_adapter(Path(last["checkpoint"]), out_dir)
    totals = store.run_totals(state.run_id)
    return {"run_id": state.run_id, "status": "done", "steps": done, "steps_this_process": 0,
            "episodes": totals["episodes"], "aborted": totals["aborted"],
            "mean_reward": None if totals["mean_reward"] is None else round(totals["mean_reward"], 4),
            "level": last["next_level"], "adapter": str(adapter)}


@dataclass
class _Totals:
    """This process's figures (the run's committed totals come from the store)."""

    steps: int = 0
    trained: int = 0  # steps whose update had a gradient (a group with unequal rewards, or a KL term)
    seconds: dict = field(default_factory=dict)  # time_split's parts, summed
    step_seconds: list[float] = field(default_factory=list)
    gpu: list[GpuFigures] = field(default_factory=list)  # each step's, on a GPU
    aborted: list[str] = field(default_factory=list)  # of each step whose every episode aborted: why

    def add(self, split: dict, trained: bool, gpu: GpuFigures | None, every_aborted: str | None) -> None:
        self.steps += 1
        self.aborted += [every_aborted] if every_aborted else []
        self.trained += trained
        self.step_seconds.append(split["wall_s"])
        self.gpu += [gpu] if gpu is not None else []
        for name, value in split.items():
            if name != "wall_s":
                self.seconds[name] = self.seconds.get(name, 0.0) + value


class _StopOnInterrupt:
    """First Ctrl-C: finish the current step (checkpoint included), then stop. Second: stop now
    (stopping.stop_now: generation ends at its next token; the run resumes from the last
    committed step)."""

    def __init__(self):
        self.requested = False
        self.loop = asyncio.get_running_loop()
        self.previous = signal.getsignal(signal.SIGINT)  # restored at the end (stop_now under the CLI)

    def __enter__(self):
        try:
            self.loop.add_signal_handler(signal.SIGINT, self._first)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
        return self

    def _first(self) -> None:
        self.requested = True
        self.loop.remove_signal_handler(signal.SIGINT)
        signal.signal(signal.SIGINT, stopping.stop_now)
        say("stopping after this step's checkpoint (Ctrl-C again to stop now)")

    def __exit__(self, *exc):
        self.loop.remove_signal_handler(signal.SIGINT)
        with contextlib.suppress(ValueError, TypeError):  # not the main thread; a handler not set from Python
            signal.signal(signal.SIGINT, self.previous)


async def run_training(runtime: Runtime, run: Run, state: RunState, out_dir: Path, seed: int,
                       total_steps: int, start: float) -> dict:
    """The steps, each in the method's order: tasks -> rollouts -> rewards and advantages ->
    update -> checkpoint -> the step's record (its commit point) -> curriculum move. Returns the
    run's summary (also what `run` closes with)."""
    recipe, cfg, cur, store = runtime.recipe, runtime.recipe.train, runtime.recipe.curriculum, runtime.store
    service = runtime.policy_service
    learner = await service.run_exclusive(Learner, service.backend, recipe.policy.lora, cfg,
                                          recipe.policy.temperature, seed)
    if state.checkpoint is not None:
        await service.run_exclusive(learner.load, state.checkpoint)
    log.info("learner: %d trainable parameters", learner.trainable_parameters)
    level, estimator = state.level, state.estimator
    totals = _Totals()
    # however the run ends, its summary says what its committed steps hold
    run.summarize = lambda: _summary(store, state, runtime, run.status, level, totals, time.perf_counter() - start)
    earlier = store.step_seconds(state.run_id)  # the run's committed steps (a resumed run's too) set the ETA's pace
    trackers = Trackers(cfg.report_to, out_dir, state.run_id, recipe.name, recipe.model_dump(mode="json"))
    prefetch: asyncio.Task | None = None
    monitor = service.backend.gpu_monitor()  # None without a GPU

    def drafts_for(step: int, at_level: int, ahead: bool = False) -> tuple[asyncio.Task, Activity]:
        """The step's task drafts, counted for the heartbeat (quietly when drafted ahead, while
        the step before trains)."""
        first = (step - 1) * cfg.tasks_per_step
        activity = doing(f"step {step}/{total_steps}: drafting {counted(cfg.tasks_per_step, 'task')} at level {at_level}",
                         cfg.tasks_per_step, quiet=ahead)

        async def counted_draft(slot: int) -> TaskDraft:
            draft = await runtime.draft_slot(first + slot, at_level, seed)
            activity.done += 1
            return draft

        return asyncio.ensure_future(asyncio.gather(*(counted_draft(s) for s in range(cfg.tasks_per_step)))), activity

    with _StopOnInterrupt() as stop:
        try:
            for step in range(state.next_step, total_steps + 1):
                if stop.requested:
                    run.status = "interrupted"
                    break
                step_start = time.perf_counter()
                if monitor is not None:
                    monitor.start()
                marks = _marks(runtime)
                log.info("step %d: tasks (level %d)", step, level)
                if prefetch is None:
                    prefetch = drafts_for(step, level)
                resume(prefetch[1])
                drafts = await prefetch[0]
                prefetch = None
                log.info("step %d: rollouts", step)
                groups = await _rollouts(runtime, state.run_id, step, total_steps, drafts, seed,
                                         earlier + totals.step_seconds, step_start)
                # Success moves the curriculum; the next step's tasks are drafted at the new level
                # while this step trains (tasks only: every trajectory comes from the current policy).
                flat = [t for g in groups for t in g]
                new_level, batch_signal = move_level(level, [t.final_reward for t in flat], estimator, cur)
                if step < total_steps and not stop.requested:
                    prefetch = drafts_for(step + 1, new_level, ahead=True)
                log.info("step %d: update", step)
                doing(f"step {step}/{total_steps}: updating the adapter", quiet=True)
                train_start = time.perf_counter()
                advantages = step_advantages(groups)
                samples = training_samples(groups, advantages, cfg.advantage_mode)
                update = await service.run_exclusive(learner.update, samples, step)
                folder = checkpoint_dir(out_dir, step)
                log.info("step %d: checkpoint", step)
                save_start = time.perf_counter()
                await service.run_exclusive(learner.save, folder, {
                    "step": step, "level": new_level, "estimator": estimator.state()})
                now = time.perf_counter()
                split = _step_time_split(runtime, marks, now - step_start, save_start - train_start, now - save_start)
                figures = episode_figures(flat)
                gpu = monitor.stop() if monitor is not None else None
                record = StepRecord(
                    step=step, level=level, next_level=new_level, knobs=json.dumps(knobs_at(level, cur.knobs).__dict__),
                    tasks=sum(d.task is not None for d in drafts), **_episode_columns(figures),
                    success_rate=figures["success_rate"], signal=rounded(mean(batch_signal)),
                    signal_rolling=rounded(estimator.value),
                    **_deltas(runtime, marks), update=update, times=StepTimes(**split), checkpoint=str(folder),
                    gpu_util=gpu.utilisation if gpu else None, gpu_mem_gib=gpu.memory_gib if gpu else None)
                store.add_step(state.run_id, record, {  # the commit point of the step
                    (t.task_index, t.rollout_index): None if t.aborted else a
                    for g, ga in zip(groups, advantages) for t, a in zip(g, ga)})
                log.info("step %d: committed", step)
                trackers.log(step, record.row())
                every_aborted = all_aborted(flat)
                totals.add(split, update.loss is not None, gpu, every_aborted)
                prune_checkpoints(out_dir, cfg.checkpoint_every, total_steps)
                eta = run_eta(earlier + totals.step_seconds, total_steps - step - 1, 0.0, 0, 0) if step < total_steps else None
                say(_summary_line(total_steps, record, figures, split, gpu)
                    + (f" | run ETA {duration(eta)}" if eta is not None else ""))
                if every_aborted:
                    say(f"step {step}: every episode aborted: {every_aborted}")
                level = new_level
        finally:
            if prefetch is not None:
                prefetch[0].cancel()
            if monitor is not None:
                monitor.halt()
            trackers.close()
    if totals.steps and not totals.trained:
        say(f"no update in {'this step' if totals.steps == 1 else f'these {totals.steps} steps'}: every group's rollouts scored alike (advantage 0), so the "
            "adapter is still the initial one; see README, Limits: a policy that never calls a tool learns nothing")
    last = store.last_step(state.run_id)
    adapter = export_adapter(Path(last["checkpoint"]), out_dir) if last else None
    summary = _summary(store, state, runtime, run.status, level, totals, time.perf_counter() - start, adapter)
    run.summarize = lambda: summary
    # every episode of this invocation aborted: the first step's causes (the command exits 3)
    return {**summary, "all_aborted": totals.aborted[0] if totals.steps and len(totals.aborted) == totals.steps
            else None}


def _episode_columns(figures: dict) -> dict:
    """The step's columns from its episodes' figures (metrics.episode_figures)."""
    return {"episodes": figures["episodes"], "aborted": figures["aborted"],
            "abort_reasons": json.dumps(figures["abort_reasons"]), "mean_reward": figures["mean_reward"],
            "std_reward": figures["std_reward"], "mean_tool_reward": figures["mean_tool_reward"],
            "mean_user_reward": figures["mean_user_reward"], "policy_tokens": figures["policy_tokens"]}


async def _rollouts(runtime: Runtime, run_id: int, step: int, total_steps: int, drafts: list[TaskDraft],
                    seed: int, step_seconds: list[float], step_start: float) -> list[list[Trajectory]]:
    """Record the step's tasks and play all their rollouts concurrently, one bar for the step,
    with the whole run's ETA beside it."""
    per_task = runtime.recipe.rollout.rollouts_per_task

    def eta(done: int, total: int) -> str:
        left = run_eta(step_seconds, total_steps - step, time.perf_counter() - step_start, done, total)
        return f"run ETA {duration(left)}" if left is not None else ""

    async def drafted(index: int) -> TaskDraft:
        return drafts[index]

    return await runtime.play_tasks(run_id, len(drafts) * per_task, per_task, drafted, seed, f"step {step}/{total_steps}",
                                    step=step, postfix=eta)


def _marks(runtime: Runtime) -> dict:
    """The counters at the start of a step (the step's figures are their deltas)."""
    sim, policy = runtime.sim.stats, runtime.policy_service.stats
    return {"policy_s": policy.busy_adapter_on_s, "sim_s": runtime.sim_service.stats.busy_adapter_off_s,
            "prefill_s": policy.prefill_s, "decode_s": policy.decode_s, "prefill_tokens": policy.fed_tokens,
            "reused_tokens": policy.reused_tokens, "compile_s": _compile_s(runtime),
            "simulator_tokens": sim.tokens, "cache_hits": sim.cache_hits, "cache_misses": sim.cache_misses}


def _deltas(runtime: Runtime, marks: dict) -> dict:
    sim, policy = runtime.sim.stats, runtime.policy_service.stats
    return {"simulator_tokens": sim.tokens - marks["simulator_tokens"], "cache_hits": sim.cache_hits - marks["cache_hits"],
            "cache_misses": sim.cache_misses - marks["cache_misses"],
            "prefill_tokens": policy.fed_tokens - marks["prefill_tokens"],
            "reused_tokens": policy.reused_tokens - marks["reused_tokens"]}


def _step_time_split(runtime: Runtime, marks: dict, wall_s: float, update_s: float, checkpoint_s: float) -> dict:
    policy = runtime.policy_service.stats
    return time_split(wall_s, policy.busy_adapter_on_s - marks["policy_s"],
                      runtime.sim_service.stats.busy_adapter_off_s - marks["sim_s"], update_s, checkpoint_s,
                      policy.prefill_s - marks["prefill_s"], policy.decode_s - marks["decode_s"],
                      _compile_s(runtime) - marks["compile_s"])


def _compile_s(runtime: Runtime) -> float:
    """Seconds either role's backend spent in calls that compiled a decode graph (one service
    when the roles share the weights)."""
    services = {id(s): s for s in (runtime.policy_service, runtime.sim_service)}.values()
    return sum(s.stats.compile_s for s in services)


def _summary_line(total: int, record: StepRecord, figures: dict, split: dict, gpu: GpuFigures | None = None) -> str:
    def num(value, fmt="{:.3f}"):
        return "-" if value is None else fmt.format(value)

    update = record.update
    return (f"step {record.step}/{total}: level {record.level}->{record.next_level} reward {num(figures['mean_reward'])}"
            f" success rate {num(figures['success_rate'], '{:.2f}')} signal {num(record.signal)}"
            f" (rolling {num(record.signal_rolling)}) aborted {figures['aborted']}/{figures['episodes']}"
            f" loss {num(update.loss, '{:.4f}')} kl {num(update.kl, '{:.5f}')} | {split['wall_s']:.1f}s"
            f" (policy {split['policy_gen_s']:.1f} [prefill {split['policy_prefill_s']:.1f}"
            f" decode {split['policy_decode_s']:.1f}] sim {split['simulation_s']:.1f} update {split['update_s']:.1f}"
            f" checkpoint {split['checkpoint_s']:.1f} waiting {split['other_s']:.1f})"
            + (f" | compiling {split['compile_s']:.1f}s" if split.get("compile_s") else "")
            + (f" | GPU {gpu.utilisation:.0f}% busy, {gpu.memory_gib:.1f} GiB" if gpu is not None else ""))


def _summary(store: Store, state: RunState, runtime: Runtime, status: str, level: int, totals: _Totals,
             wall_s: float, adapter: Path | None = None) -> dict:
    """The run's summary: its committed steps' totals and this process's time split."""
    last = store.last_step(state.run_id)
    run = store.run_totals(state.run_id)
    seconds = sorted(totals.step_seconds)
    summary = {
        "run_id": state.run_id, "status": status, "steps": last["step"] if last else 0,
        "steps_this_process": totals.steps, "episodes": run["episodes"], "aborted": run["aborted"],
        "mean_reward": None if run["mean_reward"] is None else round(run["mean_reward"], 4),
        "level": level, **{k: v for k, v in runtime.sim.stats.figures().items() if k in ("cache_hits", "cache_misses")},
        "adapter": str(adapter) if adapter else None, "wall_s": round(wall_s, 2),
        "median_step_s": round(seconds[len(seconds) // 2], 2) if seconds else None,
        **{name: round(totals.seconds.get(name, 0.0), 2) for name in (
            "policy_gen_s", "policy_prefill_s", "policy_decode_s", "simulation_s", "training_s", "update_s",
            "checkpoint_s", "other_s", "compile_s")},
    }
    if totals.gpu:  # this process's steps on a GPU: their mean utilisation, the most memory any used
        summary["gpu_util"] = round(mean(g.utilisation for g in totals.gpu), 1)
        summary["gpu_mem_gib"] = max(g.memory_gib for g in totals.gpu)
    return summary
