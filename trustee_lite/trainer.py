"""The learning loop (DESIGN.md §1 Stage III): tasks at the curriculum's level -> rollouts ->
verifier rewards -> GRPO update of the LoRA adapter -> checkpoint -> curriculum move.

A step is committed when its row lands in the `steps` table; its checkpoint is written just
before. A run killed at any moment resumes from the last committed step (runstate.py). Tasks
for step k + 1 are generated while step k trains (tasks only: every trajectory comes from the
current policy).
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from .curriculum import knobs_at, next_level, success_rewards
from .engine import Environment, aborted_without_task, make_task, open_environment, play_task, preflight
from .grpo import group_advantages
from .learner import Learner, samples_from
from .metrics import episode_figures, mean, time_split
from .progress import bar, say
from .recipe import Recipe
from .records import Trajectory
from .runstate import RunState, checkpoint_dir, export_adapter, open_run, prune_checkpoints
from .store import Store

log = logging.getLogger(__name__)


async def train(recipe: Recipe, store: Store, out_dir: Path, seed: int, steps: int | None, fresh: bool) -> dict:
    """Train (or resume training) for the recipe's steps, or `steps`; return the summary."""
    preflight(recipe)
    start = time.perf_counter()
    state = open_run(store, recipe, out_dir, seed, fresh)  # a resume error shows before models load
    if state.next_step > 1:
        say(f"resuming run {state.run_id} at step {state.next_step} (level {state.level}"
                         + (f"; {state.discarded} trajectories of the unfinished step dropped" if state.discarded else "")
                         + ")")
    async with open_environment(recipe, store) as env:
        return await run_training(env, store, state, out_dir, seed, steps or recipe.train.steps, start)


@dataclass
class _Totals:
    """This process's figures (the run's committed totals come from the store)."""

    steps: int = 0
    policy_gen_s: float = 0.0
    simulation_s: float = 0.0
    training_s: float = 0.0
    other_s: float = 0.0
    step_seconds: list[float] = field(default_factory=list)

    def add(self, split: dict) -> None:
        self.steps += 1
        self.step_seconds.append(split["wall_s"])
        for name in ("policy_gen_s", "simulation_s", "training_s", "other_s"):
            setattr(self, name, getattr(self, name) + split[name])


class _StopOnInterrupt:
    """First Ctrl-C: finish the current step (checkpoint included), then stop. Second: stop now
    (the default handler; the run resumes from the last committed step)."""

    def __init__(self):
        self.requested = False
        self.loop = asyncio.get_running_loop()

    def __enter__(self):
        try:
            self.loop.add_signal_handler(signal.SIGINT, self._first)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            pass
        return self

    def _first(self) -> None:
        self.requested = True
        self.loop.remove_signal_handler(signal.SIGINT)
        say("stopping after this step's checkpoint (Ctrl-C again to stop now)")

    def __exit__(self, *exc):
        self.loop.remove_signal_handler(signal.SIGINT)


async def run_training(env: Environment, store: Store, state: RunState, out_dir: Path, seed: int,
                       total_steps: int, start: float) -> dict:
    recipe, cfg, cur = env.recipe, env.recipe.train, env.recipe.curriculum
    service = env.policy_service
    learner = await service.run_exclusive(Learner, service.backend, recipe.policy.lora, cfg,
                                          recipe.policy.temperature, seed)
    if state.checkpoint is not None:
        await service.run_exclusive(learner.load, state.checkpoint)
    log.info("learner: %d trainable parameters", learner.trainable_parameters)
    level, estimator = state.level, state.estimator
    totals = _Totals()
    prefetch: asyncio.Task | None = None
    status = "done"

    def tasks_for(step: int, at_level: int) -> asyncio.Task:
        first = (step - 1) * cfg.tasks_per_step
        return asyncio.ensure_future(asyncio.gather(*(
            make_task(env, first + slot, at_level, seed, cfg.task_attempts, cur.step)
            for slot in range(cfg.tasks_per_step))))

    with _StopOnInterrupt() as stop:
        try:
            for step in range(state.next_step, total_steps + 1):
                if stop.requested:
                    status = "interrupted"
                    break
                step_start = time.perf_counter()
                marks = _marks(env)
                log.info("step %d: tasks (level %d)", step, level)
                drafted = await (prefetch or tasks_for(step, level))
                prefetch = None
                log.info("step %d: rollouts", step)
                groups = await _rollouts(env, store, state.run_id, step, total_steps, drafted, seed)
                flat = [t for g in groups for t in g]
                advantages = [a for g in groups for a in group_advantages([t.final_reward for t in g])]
                batch_signal = success_rewards([t.final_reward for t in flat], cur.aborted)
                estimator.update(batch_signal)
                new_level = next_level(level, estimator.value, cur.step, cur.up_threshold, cur.down_threshold)
                if step < total_steps and not stop.requested:
                    prefetch = tasks_for(step + 1, new_level)
                log.info("step %d: update", step)
                train_start = time.perf_counter()
                update = await service.run_exclusive(learner.update, samples_from(flat, advantages), step)
                folder = checkpoint_dir(out_dir, step)
                log.info("step %d: checkpoint", step)
                await service.run_exclusive(learner.save, folder, {
                    "step": step, "level": new_level, "estimator": estimator.state()})
                training_s = time.perf_counter() - train_start
                split = _split(env, marks, time.perf_counter() - step_start, training_s)
                figures = episode_figures(flat)
                store.add_step(state.run_id, {
                    "step": step, "level": level, "next_level": new_level,
                    "knobs": json.dumps(knobs_at(level, cur.knobs).__dict__),
                    "tasks": sum(task is not None for task, _ in drafted),
                    "episodes": figures["episodes"], "aborted": figures["aborted"],
                    "abort_reasons": json.dumps(figures["abort_reasons"]),
                    "mean_reward": figures["mean_reward"], "std_reward": figures["std_reward"],
                    "success_batch": mean(batch_signal), "success_rolling": estimator.value,
                    "mean_tool_reward": figures["mean_tool_reward"], "mean_user_reward": figures["mean_user_reward"],
                    "policy_tokens": figures["policy_tokens"],
                    "simulator_tokens": env.sim.stats.tokens - marks["sim_tokens"],
                    "cache_hits": env.sim.stats.cache_hits - marks["hits"],
                    "cache_misses": env.sim.stats.cache_misses - marks["misses"],
                    "samples": update.samples, "loss": update.loss, "pg_loss": update.pg_loss, "kl": update.kl,
                    "grad_norm": update.grad_norm, "learning_rate": update.learning_rate,
                    "clip_fraction": update.clip_fraction, **split, "checkpoint": str(folder),
                })  # the commit point of the step
                log.info("step %d: committed", step)
                totals.add(split)
                prune_checkpoints(out_dir, cfg.checkpoint_every, total_steps)
                say(_summary_line(step, total_steps, level, new_level, figures, update, split))
                level = new_level
        finally:
            if prefetch is not None:
                prefetch.cancel()
    return _finish(store, state, env, out_dir, status, level, totals, time.perf_counter() - start)


async def _rollouts(env: Environment, store: Store, run_id: int, step: int, total_steps: int,
                    drafted: list, seed: int) -> list[list[Trajectory]]:
    """Record the step's tasks and play all their rollouts concurrently, one bar for the step."""
    per_task = env.recipe.rollout.rollouts_per_task
    progress = bar(len(drafted) * per_task, f"step {step}/{total_steps}")

    async def one(task, info) -> list[Trajectory]:
        if task is None:
            task_id = store.add_failed_task(run_id, info["index"], info["category"], info["level"],
                                            info["knobs"], info["tool_names"], info["failure"], step=step)
            trajs = [aborted_without_task(info["index"], r, "task_generator_invalid") for r in range(per_task)]
            for traj in trajs:
                store.add_trajectory(run_id, task_id, traj, step)
            progress.update(per_task)
            return trajs
        task_id = store.add_task(run_id, task, info["level"], step)

        def record(traj: Trajectory) -> None:
            store.add_trajectory(run_id, task_id, traj, step)
            progress.update(1)

        return await play_task(env, task, per_task, seed, record)

    try:
        return list(await asyncio.gather(*(one(task, info) for task, info in drafted)))
    finally:
        progress.close()


def _marks(env: Environment) -> dict:
    return {"policy_s": env.policy_service.stats.busy_policy_s, "sim_s": env.sim_service.stats.busy_base_s,
            "sim_tokens": env.sim.stats.tokens, "hits": env.sim.stats.cache_hits, "misses": env.sim.stats.cache_misses}


def _split(env: Environment, marks: dict, wall_s: float, training_s: float) -> dict:
    return time_split(wall_s, env.policy_service.stats.busy_policy_s - marks["policy_s"],
                      env.sim_service.stats.busy_base_s - marks["sim_s"], training_s)


def _summary_line(step, total, level, new_level, figures, update, split) -> str:
    def num(value, fmt="{:.3f}"):
        return "-" if value is None else fmt.format(value)

    return (f"step {step}/{total}: level {level}->{new_level} reward {num(figures['mean_reward'])}"
            f" success {num(figures['success_rate'], '{:.2f}')} aborted {figures['aborted']}/{figures['episodes']}"
            f" loss {num(update.loss, '{:.4f}')} kl {num(update.kl, '{:.5f}')} | {split['wall_s']:.1f}s"
            f" (policy {split['policy_gen_s']:.1f} sim {split['simulation_s']:.1f} train {split['training_s']:.1f}"
            f" other {split['other_s']:.1f})")


def _finish(store: Store, state: RunState, env: Environment, out_dir: Path, status: str, level: int,
            totals: _Totals, wall_s: float) -> dict:
    last = store.last_step(state.run_id)
    adapter = export_adapter(Path(last["checkpoint"]), out_dir) if last else None
    run = store.run_totals(state.run_id)
    seconds = sorted(totals.step_seconds)
    summary = {
        "run_id": state.run_id, "status": status, "steps": last["step"] if last else 0,
        "steps_this_process": totals.steps, "episodes": run["episodes"], "aborted": run["aborted"],
        "mean_reward": None if run["mean_reward"] is None else round(run["mean_reward"], 4),
        "level": level, "cache_hits": env.sim.stats.cache_hits, "cache_misses": env.sim.stats.cache_misses,
        "adapter": str(adapter) if adapter else None, "wall_s": round(wall_s, 2),
        "median_step_s": round(seconds[len(seconds) // 2], 2) if seconds else None,
        "policy_gen_s": round(totals.policy_gen_s, 2), "simulation_s": round(totals.simulation_s, 2),
        "training_s": round(totals.training_s, 2), "other_s": round(totals.other_s, 2),
    }
    store.finish_run(state.run_id, status, summary)
    return summary
