"""Assembly of a run: the tool pool, the models behind their generation services, the policy's
chat, the simulator client and the store, alive for the length of a command.

It also holds the one path every command takes for a task slot: record the draft (a task or
why there is none), play its rollouts, record each trajectory as it finishes.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from trustee_lite.config import Recipe
from trustee_lite.env.chat import PolicyChat, TemplateError
from trustee_lite.env.drafting import aborted_without_task, draft_slot, draft_task
from trustee_lite.env.episode import EpisodeLimits, Policy, play_group
from trustee_lite.env.pool.sources import listed_entries, open_pool
from trustee_lite.env.pool.tools import ToolPool
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.errors import UserError
from trustee_lite.lm import GenerationService, backend_class, build_backend
from trustee_lite.records import TaskDraft, Trajectory
from trustee_lite.store import Store


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

    async def draft(self, index: int, level: int, seed: int) -> TaskDraft:
        """One draw for slot `index` (simulate, held-out tasks)."""
        return await draft_task(self.sim, self.pool, self.recipe.curriculum, index, level, seed)

    async def draft_slot(self, index: int, level: int, seed: int) -> TaskDraft:
        """Up to `train.task_attempts` draws for a training slot, lowering the level as it fails."""
        return await draft_slot(self.sim, self.pool, self.recipe.curriculum, index, level, seed,
                                self.recipe.train.task_attempts)

    async def play(self, draft: TaskDraft, rollouts: int, seed: int, run_id: int, step: int | None = None,
                   on_done=None) -> list[Trajectory]:
        """Record the draft, play its rollouts (or record them aborted when it has no task), and
        record each trajectory as it finishes; `on_done(traj)` after each. In rollout order."""
        task_id = self.store.add_draft(run_id, draft, step)

        def record(traj: Trajectory) -> None:
            self.store.add_trajectory(run_id, task_id, traj, step)
            if on_done is not None:
                on_done(traj)

        if draft.task is None:
            trajectories = [aborted_without_task(draft, r) for r in range(rollouts)]
            for traj in trajectories:
                record(traj)
            return trajectories
        limits = EpisodeLimits.of(draft.task.knobs, self.recipe)
        return await play_group(draft.task, rollouts, self.policy, self.sim, limits, seed, record)


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
            yield Runtime(recipe, store, pool, policy, sim, policy_service, sim_service)
    finally:
        for backend in {id(policy_backend): policy_backend, id(sim_backend): sim_backend}.values():
            await backend.aclose()
