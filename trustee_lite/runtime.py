"""Assembly of a run: the tool pool, the models behind their generation services, the policy's
chat, the simulator client and the store, alive for the length of a command.

It also holds the one run path every command takes: `recorded_run` opens a run's row and
closes it as done, interrupted or failed (with the reason) however the command ends, and
`Runtime.play_tasks` drafts and plays task slots behind a limit, one bar for their episodes,
recording each draft and each trajectory as it finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from trustee_lite.config import Recipe
from trustee_lite.env.chat import PolicyChat, TemplateError
from trustee_lite.env.drafting import aborted_without_task, draft_slot, draft_task
from trustee_lite.env.episode import EpisodeLimits, Policy, play_group
from trustee_lite.env.pool.sources import listed_entries, open_pool
from trustee_lite.env.pool.tools import ToolPool, check_tool_file_name, write_document
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.env.task_file import FileTask
from trustee_lite.env.task_source import TaskSet
from trustee_lite.env.task_source import read as read_task_file
from trustee_lite.env.task_source import task_set as make_task_set
from trustee_lite.errors import UserError
from trustee_lite.lm import GenerationService, backend_class, build_backend
from trustee_lite.progress import bar
from trustee_lite.records import TaskDraft, Trajectory
from trustee_lite.store import Store

log = logging.getLogger(__name__)


@dataclass
class Run:
    """A recorded run while a command works in it: its id, and what its row says at the end."""

    id: int
    status: str = "done"  # how a block that ends normally closes (train: "interrupted" after Ctrl-C)
    summarize: Callable[[], dict] = field(default=dict)  # makes the summary stored when it closes, however
    summary: dict = field(default_factory=dict)  # what was stored, once closed


@contextlib.contextmanager
def recorded_run(store: Store, kind: str, recipe: Recipe, seed: int, run_id: int | None = None) -> Iterator[Run]:
    """Open a run of `kind` (or carry on run `run_id`: a training run, which train/checkpoints.py
    starts or resumes), yield it, and close it with `run.summarize()`: as `run.status` when the
    block ends normally, "interrupted" on Ctrl-C or cancellation, "failed" on any other error
    (its first line stored as the summary's `failure`)."""
    if run_id is None:
        run_id = store.start_run(kind, recipe.name, seed, recipe.model_dump(mode="json"))
    run = Run(run_id)
    failure = None
    try:
        yield run
    except (KeyboardInterrupt, asyncio.CancelledError):
        run.status = "interrupted"
        raise
    except BaseException as err:
        run.status, failure = "failed", (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise
    finally:
        try:
            summary = run.summarize()
        except Exception as err:  # noqa: BLE001 - a summary that cannot be made must not hide why the run ended
            log.warning("run %d: no summary (%s)", run.id, err)
            summary = {}
        run.summary = {**summary, **({"failure": failure} if failure else {})}
        try:
            store.finish_run(run.id, run.status, run.summary)
        except sqlite3.Error:
            if failure is None and run.status != "interrupted":
                raise
            log.warning("run %d: its end could not be recorded", run.id)  # the error that ended it goes on


@dataclass
class Runtime:
    """Everything a command needs to draft tasks and play episodes."""

    recipe: Recipe
    store: Store
    pool: ToolPool
    policy: Policy
    sim: SimulatorClient
    policy_service: GenerationService
    sim_service: GenerationService
    tasks: TaskSet | None = None  # the recipe's tasks file, resolved and split

    async def draft(self, index: int, level: int, seed: int, from_file: bool = True) -> TaskDraft:
        """One draw for slot `index` (simulate, held-out tasks; `from_file` False: generated only)."""
        return await draft_task(self.sim, self.pool, self.recipe.curriculum, index, level, seed,
                                tasks=self.tasks if from_file else None)

    async def draft_slot(self, index: int, level: int, seed: int) -> TaskDraft:
        """Up to `train.task_attempts` draws for a training slot, lowering the level as it fails."""
        return await draft_slot(self.sim, self.pool, self.recipe.curriculum, index, level, seed,
                                self.recipe.train.task_attempts, self.tasks)

    async def play_tasks(self, run_id: int, episodes: int, rollouts: int, draft: Callable[[int], Awaitable[TaskDraft]],
                         seed: int, desc: str, limit: int | None = None, step: int | None = None,
                         on_done: Callable[[Trajectory], None] | None = None,
                         postfix: Callable[[int, int], str] | None = None) -> list[list[Trajectory]]:
        """Play `episodes` episodes, `rollouts` per task slot (the last slot takes what is left):
        each slot is drafted by `draft(index)` once fewer than `limit` slots are in flight (None:
        all at once), then played; every draft and trajectory is recorded as it comes. One bar
        counts the episodes, `postfix(done, total)` beside it; `on_done(traj)` after each.
        Returns each slot's trajectories, in slot and rollout order."""
        progress = bar(episodes, desc, postfix=None if postfix is None else lambda: postfix(progress.n, progress.total))
        gate = asyncio.Semaphore(limit or max(1, episodes))
        if postfix is not None and (text := postfix(0, episodes)):
            progress.set_postfix_str(text)

        def done(traj: Trajectory) -> None:
            if postfix is not None:
                progress.set_postfix_str(postfix(progress.n + 1, progress.total), refresh=False)
            progress.update(1)
            if on_done is not None:
                on_done(traj)

        async def slot(index: int) -> list[Trajectory]:
            async with gate:
                return await self._play(await draft(index), min(rollouts, episodes - index * rollouts), seed, run_id,
                                        step, done)

        try:
            return list(await asyncio.gather(*(slot(i) for i in range(math.ceil(episodes / rollouts)))))
        finally:
            progress.close()

    async def _play(self, draft: TaskDraft, rollouts: int, seed: int, run_id: int, step: int | None,
                    on_done) -> list[Trajectory]:
        """Record the draft, play its rollouts (or record them aborted when it has no task), and
        record each trajectory as it finishes; `on_done(traj)` after each. In rollout order."""
        task_id = self.store.add_draft(run_id, draft, step)

        def record(traj: Trajectory) -> None:
            self.store.add_trajectory(run_id, task_id, traj, step)
            on_done(traj)

        if draft.task is None:
            trajectories = [aborted_without_task(draft, r) for r in range(rollouts)]
            for traj in trajectories:
                record(traj)
            return trajectories
        limits = EpisodeLimits.of(draft.task.knobs, self.recipe)
        return await play_group(draft.task, rollouts, self.policy, self.sim, limits, seed, record)


async def export_pool(recipe: Recipe, store: Store, out: Path) -> dict:
    """`tools export`: the recipe's pool, every synthesized toolset included (the simulator starts
    only if some are missing), written as one tool file; its counts."""
    check_tool_file_name(out)
    listed = await listed_entries(recipe)
    synth = recipe.tools.synthesize
    if synth is not None and any(len(store.toolsets(d)) < synth.toolsets_per_domain for d in synth.domains):
        async with open_simulator(recipe, store) as sim:
            pool, _ = await open_pool(recipe, store, sim, listed)
    else:
        pool, _ = await open_pool(recipe, store, None, listed)
    write_document(pool.as_file(), out)
    return {"out": str(out), "categories": len(pool.groups), "toolsets": sum(len(s) for s in pool.groups.values()),
            "tools": len(pool.tools)}


def read_recipe_tasks(recipe: Recipe) -> list[FileTask] | None:
    """The recipe's tasks file, read and checked (before any model loads); None without one."""
    return None if recipe.tasks is None else read_task_file(recipe.tasks)


def task_set(recipe: Recipe, rows: list[FileTask] | None, pool: ToolPool) -> TaskSet | None:
    """The tasks file's rows resolved against the pool and split (None without a tasks file)."""
    return None if rows is None else make_task_set(recipe.tasks, rows, pool, recipe.seed)


def preflight(recipe: Recipe, simulator: bool = True, policy: bool = True) -> None:
    """Refuse what this machine cannot run before anything is loaded or recorded (only the
    models the command uses: `simulator` or `policy` False leaves that one out)."""
    for name in ("policy",) * policy + ("simulator",) * simulator:
        cfg = getattr(recipe, name)
        backend_class(cfg.backend).check_runnable(cfg, f"{recipe.source}: {name}")


def load_policy(recipe: Recipe):
    """The policy's transformers backend, with the recipe's adapter if it names one."""
    return build_backend(recipe.policy.backend, recipe.policy, f"{recipe.source}: policy", adapter=recipe.policy.adapter,
                         lora=recipe.policy.lora, seed=recipe.seed,
                         gradient_checkpointing=recipe.train.gradient_checkpointing)


def policy_chat(recipe: Recipe, tokenizer) -> PolicyChat:
    """The policy's chat renderer; a tokenizer without a chat template is the user's error."""
    try:
        return PolicyChat(tokenizer, recipe.policy.thinking)
    except TemplateError as err:
        raise UserError(f"{recipe.source}: policy.model", f"{err} (a chat or instruct model is needed)") from None


@contextlib.asynccontextmanager
async def open_simulator(recipe: Recipe, store: Store):
    """The simulator alone (a command that never runs the policy): its client, started."""
    preflight(recipe, policy=False)
    backend = build_backend(recipe.simulator.backend, recipe.simulator, f"{recipe.source}: simulator")
    try:
        async with GenerationService.of(backend, recipe.simulator) as service:
            yield SimulatorClient(service, store, recipe.simulator)
    finally:
        await backend.aclose()


@contextlib.asynccontextmanager
async def open_runtime(recipe: Recipe, store: Store):
    """List the tool sources, load the models, start the generation services, complete the pool
    (toolsets the simulator writes need it); close them after."""
    place = recipe.source
    listed = await listed_entries(recipe)  # a bad tool source stops the command before a model loads
    rows = read_recipe_tasks(recipe)  # so does a bad tasks file (its tool names too, unless toolsets are synthesized)
    early = None
    if rows is not None and recipe.tools.synthesize is None:
        early = task_set(recipe, rows, (await open_pool(recipe, store, None, listed, quiet=True))[0])
    policy_backend = load_policy(recipe)
    shared = recipe.shared_weights  # one copy of the weights serves both; the simulator runs adapter-off
    sim_backend = policy_backend if shared else build_backend(recipe.simulator.backend, recipe.simulator, f"{place}: simulator")
    try:
        async with contextlib.AsyncExitStack() as stack:
            policy_service = await stack.enter_async_context(GenerationService.of(policy_backend, recipe.policy))
            sim_service = policy_service if shared else await stack.enter_async_context(
                GenerationService.of(sim_backend, recipe.simulator))
            chat = policy_chat(recipe, policy_backend.tokenizer)
            policy = Policy(policy_service, chat, recipe.policy.temperature, recipe.policy.top_p)
            sim = SimulatorClient(sim_service, store, recipe.simulator)
            pool, _ = await open_pool(recipe, store, sim, listed)
            yield Runtime(recipe, store, pool, policy, sim, policy_service, sim_service, early or task_set(recipe, rows, pool))
    finally:
        for backend in {id(policy_backend): policy_backend, id(sim_backend): sim_backend}.values():
            await backend.aclose()
