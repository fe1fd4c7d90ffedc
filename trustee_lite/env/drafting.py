"""Stage I, task drafting: for one slot, knobs and tools drawn from the run seed, then the task
generator asked; with a tasks file (env/task_source.py), the slot may play a file task instead
(its query and tools fixed, what it leaves out written by the generator) or the generator is
shown file tasks as examples. The result is a TaskDraft either way: a task, or the reason there
is none."""

from __future__ import annotations

import random
from dataclasses import replace

from trustee_lite.config import CurriculumConfig
from trustee_lite.env import task_generator
from trustee_lite.env.knobs import sample_task_knobs
from trustee_lite.env.pool.tools import ToolPool
from trustee_lite.env.role import SimulationFailed
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.env.task_file import FileTask
from trustee_lite.env.task_source import TaskSet
from trustee_lite.records import Task, TaskDraft, Trajectory
from trustee_lite.seeds import derive_seed


async def draft_task(sim: SimulatorClient, pool: ToolPool, curriculum: CurriculumConfig, index: int, level: int,
                     run_seed: int, attempt: int = 0, tasks: TaskSet | None = None) -> TaskDraft:
    """Draw knobs and tools for slot `index` at `level` and ask the task generator (or play the
    file task `tasks` picks for the slot)."""
    picked = tasks.pick(index, level, run_seed) if tasks is not None else None
    if picked is not None:
        return await draft_file_task(sim, pool, curriculum, picked, tasks.file, index, level, run_seed, attempt)
    parts = ("task", index) + ((attempt,) if attempt else ())
    rng = random.Random(derive_seed(run_seed, *parts))
    knobs = sample_task_knobs(level, curriculum, rng)
    category, tools = pool.sample(knobs.num_tools, rng)
    names = tuple(t["function"]["name"] for t in tools)
    draft = TaskDraft(index=index, level=level, category=category, knobs=knobs, tool_names=names)
    examples = tuple(t.query for t in tasks.shown(names, index, run_seed)) if tasks is not None else ()
    call = task_generator.request(index, category, tools, knobs, pool.services(category, tools), examples)
    return await _drafted(sim, call, draft, run_seed, parts)


async def draft_file_task(sim: SimulatorClient, pool: ToolPool, curriculum: CurriculumConfig, task: FileTask, file: str,
                          index: int, level: int, run_seed: int, attempt: int = 0) -> TaskDraft:
    """Slot `index` plays `task` from the user's file: its query and tools as written, knobs from
    the level (tool and call counts from the task), the generator asked only for what it leaves
    out."""
    parts = ("task", index) + ((attempt,) if attempt else ())
    knobs = sample_task_knobs(level, curriculum, random.Random(derive_seed(run_seed, *parts)))
    knobs = replace(knobs, num_tools=len(task.tools), num_calls=len(task.expected_calls) or knobs.num_calls)
    by_name = pool.tools
    tools = tuple(by_name[name] for name in task.tools)
    category = pool.category_of(task.tools[0])
    origin = f"{file}#{task.id}"
    draft = TaskDraft(index=index, level=level, category=category, knobs=knobs, tool_names=task.tools, origin=origin)
    checks = tuple(c for c in task.expected_calls if c.arguments)
    if task.complete:
        return replace(draft, task=Task(
            index=index, category=category, tools=tools, knobs=knobs, user_intent=task.intent,
            expected_tool_calls=tuple(c.name for c in task.expected_calls), user_persona=task.persona,
            first_user_query=task.query, origin=origin, checks=checks))
    call = task_generator.complete(index, category, tools, knobs, task.query, task.intent, task.expected_calls,
                                   task.persona, origin)
    return await _drafted(sim, call, draft, run_seed, parts)


async def _drafted(sim: SimulatorClient, call, draft: TaskDraft, run_seed: int, parts: tuple) -> TaskDraft:
    try:
        return replace(draft, task=await sim.run(call, run_seed, *parts))
    except SimulationFailed as failure:
        return replace(draft, failure=str(failure))


async def draft_slot(sim: SimulatorClient, pool: ToolPool, curriculum: CurriculumConfig, index: int, level: int,
                     run_seed: int, attempts: int, tasks: TaskSet | None = None) -> TaskDraft:
    """A valid task for one slot of a training batch: up to `attempts` draws, the later ones at a
    level lowered by the curriculum's step every two attempts, so that a batch fills even when
    the generator struggles at the current difficulty. The last draft if none succeeds."""
    draft = None
    for attempt in range(attempts):
        lowered = max(1, level - curriculum.step * (attempt // 2))
        draft = await draft_task(sim, pool, curriculum, index, lowered, run_seed, attempt, tasks)
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
