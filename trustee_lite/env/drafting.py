"""Stage I, task drafting: for one slot, knobs and tools drawn from the run seed, then the task
generator asked. The result is a TaskDraft either way: a task, or the reason there is none."""

from __future__ import annotations

import random

from trustee_lite.config import CurriculumConfig
from trustee_lite.env import task_generator
from trustee_lite.env.knobs import sample_task_knobs
from trustee_lite.env.pool.tools import ToolPool
from trustee_lite.env.role import SimulationFailed
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.records import TaskDraft, Trajectory
from trustee_lite.seeds import derive_seed


async def draft_task(sim: SimulatorClient, pool: ToolPool, curriculum: CurriculumConfig, index: int, level: int,
                     run_seed: int, attempt: int = 0) -> TaskDraft:
    """Draw knobs and tools for slot `index` at `level` and ask the task generator."""
    parts = ("task", index) + ((attempt,) if attempt else ())
    rng = random.Random(derive_seed(run_seed, *parts))
    knobs = sample_task_knobs(level, curriculum, rng)
    category, tools = pool.sample(knobs.num_tools, rng)
    draft = TaskDraft(index=index, level=level, category=category, knobs=knobs,
                      tool_names=tuple(t["function"]["name"] for t in tools))
    try:
        task = await sim.run(task_generator.request(index, category, tools, knobs, pool.services(category, tools)), run_seed, *parts)
    except SimulationFailed as failure:
        return TaskDraft(**{**draft.__dict__, "failure": str(failure)})
    return TaskDraft(**{**draft.__dict__, "task": task})


async def draft_slot(sim: SimulatorClient, pool: ToolPool, curriculum: CurriculumConfig, index: int, level: int,
                     run_seed: int, attempts: int) -> TaskDraft:
    """A valid task for one slot of a training batch: up to `attempts` draws, the later ones at a
    level lowered by the curriculum's step every two attempts, so that a batch fills even when
    the generator struggles at the current difficulty. The last draft if none succeeds."""
    draft = None
    for attempt in range(attempts):
        lowered = max(1, level - curriculum.step * (attempt // 2))
        draft = await draft_task(sim, pool, curriculum, index, lowered, run_seed, attempt)
        if draft.task is not None:
            break
    return draft


def aborted_without_task(draft: TaskDraft, rollout: int) -> Trajectory:
    """The record of a rollout that could not be played: its slot has no task (the generator's
    failure is its cause, as an aborted episode's is)."""
    reason = "task_generator_invalid"
    cause = (draft.failure or "").removeprefix(f"{reason}: ")
    return Trajectory(task_index=draft.index, rollout_index=rollout, turns=(), end_reason="aborted",
                      final_reward=None, abort_reason=reason, verifier_reasoning=cause)
