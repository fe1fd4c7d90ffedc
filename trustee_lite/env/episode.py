"""One episode: the policy against the simulated user and tools, judged by the verifier.

The loop: the policy writes a turn. Tool calls go to the tool simulator (concurrently; unknown
tools are answered without the model) and the results come back to the policy; a turn without
calls goes to the user simulator, whose empty reply ends the episode. Caps on assistant, user
and tool turns and a response-token budget end it too. Every token the policy saw and produced
is kept, with a mask of the tokens it generated itself.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from trustee_lite import prompts
from trustee_lite.env import tool_simulator, user_simulator, verifier
from trustee_lite.env.chat import PolicyChat, TemplateError, TokenTrace
from trustee_lite.env.role import SimulationFailed
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.env.toolcalls import ToolCall, parse_turn
from trustee_lite.lm import Completion, ContextLimit, GenerationError, GenerationService, GenRequest, Sampling
from trustee_lite.metrics import mean
from trustee_lite.records import KnobValues, Task, ToolResult, Trajectory, Turn, has_tool_call
from trustee_lite.seeds import derive_seed


@dataclass(frozen=True)
class EpisodeLimits:
    max_assistant_turns: int
    max_user_turns: int
    max_tool_turns: int
    max_new_tokens: int  # one policy turn
    max_response_tokens: int  # all policy turns together
    max_result_chars: int  # tool results are truncated to this
    max_history_chars: int  # conversation text shown to simulator roles
    max_parallel_calls: int = 3  # calls simulated per turn; later ones are answered by code

    @classmethod
    def of(cls, knobs: KnobValues, recipe) -> EpisodeLimits:
        return cls(
            max_assistant_turns=knobs.max_assistant_turns, max_user_turns=knobs.max_user_turns,
            max_tool_turns=knobs.max_tool_turns, max_new_tokens=recipe.policy.max_new_tokens,
            max_response_tokens=recipe.policy.max_response_tokens,
            max_result_chars=recipe.tools.max_result_chars, max_history_chars=recipe.simulator.max_history_chars,
            max_parallel_calls=recipe.rollout.max_parallel_calls,
        )


class Policy:
    """The policy side: its generation service, its chat template, its sampling settings."""

    def __init__(self, service: GenerationService, chat: PolicyChat, temperature: float, top_p: float):
        self.service = service
        self.chat = chat
        self.temperature = temperature
        self.top_p = top_p

    async def turn(self, ids: list[int], max_new_tokens: int, seed: int) -> Completion:
        sampling = Sampling(max_new_tokens=max_new_tokens, temperature=self.temperature, top_p=self.top_p, seed=seed)
        return await self.service.generate(GenRequest(prompt_ids=tuple(ids), sampling=sampling, logprobs=True))


async def run_episode(
    task: Task, rollout: int, policy: Policy, sim: SimulatorClient, limits: EpisodeLimits, run_seed: int,
) -> Trajectory:
    """Play one episode to its end; a simulator failure, a request that does not fit the context
    window or a template that cannot continue aborts it (kept, with the reason)."""
    system = prompts.policy_system_prompt(task.knobs.system_prompt)
    turns: list[Turn] = []
    prompt: list[int] = []
    tokens = TokenTrace(policy.chat, prompt)
    counts = {"assistant": 0, "user": 0, "tool": 0}
    budget = limits.max_response_tokens
    where = (run_seed, task.index, rollout)

    def finish(end_reason: str, reward: float | None, reasoning: str = "", abort: str | None = None) -> Trajectory:
        return Trajectory(
            task_index=task.index, rollout_index=rollout, turns=tuple(turns), end_reason=end_reason,
            final_reward=reward, verifier_reasoning=reasoning, abort_reason=abort,
            token_ids=tuple(tokens.ids), policy_mask=tuple(tokens.mask), logprobs=tuple(tokens.logprobs),
            prompt_tokens=len(prompt),
        )

    try:
        prompt = policy.chat.first_prompt(system, task.first_user_query, task.tools)
        tokens = TokenTrace(policy.chat, prompt)
        while True:
            step = len(turns)
            completion = await policy.turn(tokens.ids, min(limits.max_new_tokens, budget), derive_seed(*where, "policy", step))
            tokens.add_policy(completion.token_ids, completion.logprobs)
            budget -= completion.num_tokens
            parsed = parse_turn(completion.text)
            turns.append(Turn(role="assistant", content=completion.text, calls=parsed.calls))
            counts["assistant"] += 1
            if budget <= 0:
                end = "token_budget"
                break
            if counts["assistant"] >= limits.max_assistant_turns:
                end = "max_assistant_turns"
                break
            if parsed.calls:
                if counts["tool"] >= limits.max_tool_turns:
                    end = "max_tool_turns"
                    break
                results = await _simulate_calls(task, sim.shown(turns), parsed.calls, sim, limits, (*where, step))
                reward = mean(r.reward for r in results)
                turns.append(Turn(role="tool", content="", results=results, reward=reward))
                counts["tool"] += 1
                new = policy.chat.tool_messages([(r.call.name, r.result) for r in results])
            else:
                if counts["user"] >= limits.max_user_turns:
                    end = "max_user_turns"
                    break
                reply = await sim.run(user_simulator.request(task, sim.shown(turns), limits.max_history_chars), *where, step)
                turns.append(Turn(role="user", content=reply.response, reward=reply.reward))
                counts["user"] += 1
                if not reply.response:
                    end = "user_done"
                    break
                new = [policy.chat.user_message(reply.response)]
            tokens.add_messages(new)
        verdict = verifier.no_tool_call() if not has_tool_call(turns) else verifier.missed_call(task, turns)
        if verdict is None:
            call = verifier.request(task, sim.shown(turns), task.knobs.num_criteria, limits.max_history_chars)
            verdict = await sim.run(call, *where, "verdict")
        return finish(end, float(verdict.reward), verdict.reasoning)
    except SimulationFailed as failure:
        return finish("aborted", None, abort=failure.reason, reasoning=failure.detail)
    except TemplateError as err:
        return finish("aborted", None, abort=err.reason, reasoning=str(err))
    except GenerationError as err:  # the policy's own request: too long for the context, or failed
        return finish("aborted", None, abort=err.reason if isinstance(err, ContextLimit) else "policy_error",
                      reasoning=str(err))


async def play_group(task: Task, rollouts: int, policy: Policy, sim: SimulatorClient, limits: EpisodeLimits,
                     run_seed: int, on_done) -> list[Trajectory]:
    """All rollouts of one task, concurrently; `on_done(traj)` as each finishes. In rollout order."""

    async def one(r: int) -> Trajectory:
        traj = await run_episode(task, r, policy, sim, limits, run_seed)
        on_done(traj)
        return traj

    return list(await asyncio.gather(*(one(r) for r in range(rollouts))))


async def _simulate_calls(task, turns, calls: tuple[ToolCall, ...], sim, limits, where) -> tuple[ToolResult, ...]:
    async def one(index: int, call: ToolCall) -> ToolResult:
        reply = tool_simulator.over_cap(index, limits.max_parallel_calls) or tool_simulator.unknown_tool(call, task)
        if reply is None:
            reply = await sim.run(tool_simulator.request(task, turns, call, limits.max_history_chars), *where, index)
        return ToolResult(call=call, result=reply.result[: limits.max_result_chars], reward=reply.reward)

    outcomes = await asyncio.gather(*(one(i, c) for i, c in enumerate(calls)), return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return tuple(outcomes)
