"""The mechanics learn: the embedded model as policy, a scripted simulator whose verifier rewards
one exact tool call. With a fixed seed the mean reward rises over a few GRPO steps."""

from __future__ import annotations

import asyncio
import copy
import json
import time

from scripted import ScriptedBackend, role_of

from trustee_lite.config import parse_recipe
from trustee_lite.env import transcript
from trustee_lite.env.chat import PolicyChat
from trustee_lite.env.episode import Policy
from trustee_lite.env.pool.tools import load_pool
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.lm import GenerationService
from trustee_lite.lm.prefix_cache import PrefixCache
from trustee_lite.runtime import Runtime, recorded_run
from trustee_lite.store import Store
from trustee_lite.train.checkpoints import open_run
from trustee_lite.train.loop import run_training

WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
EXACT = {"name": "weather", "arguments": {"city": "Paris"}}
# The toy task spells the call out; the base model copies it now and then, GRPO makes it a habit.
QUERY = 'Reply with exactly this and nothing else: <tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>'
STEPS = 6

SIMULATOR = {
    "task_generator": {"user_intent": "Know the weather in Paris.", "expected_tool_calls": ["weather"],
                       "user_persona": "A traveller.", "first_user_query": QUERY},
    "user_simulator": {"response": "", "reward": 1},
    "tool_simulator": {"result": '{"temp_c": 18, "sky": "clear"}', "reward": 1},
}


def exact_call_made(prompt: str) -> bool:
    """Whether the policy made the exact call, read from the conversation the verifier sees."""
    return any(EXACT in m.get("tool_calls", []) for m in transcript.parse(prompt) if m["role"] == "assistant")


def simulator(request) -> str:
    role = role_of(request)
    if role == "verifier":
        made = exact_call_made(request.messages[-1]["content"])
        return json.dumps({"reasoning": "exact call" if made else "no exact call", "reward": 1 if made else -1})
    return json.dumps(SIMULATOR[role])


def test_mean_reward_rises(smol_backend, tmp_path):
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps([WEATHER]))
    recipe = parse_recipe({
        "name": "learn", "seed": 1,
        "policy": {"model": "embedded", "max_new_tokens": 32, "max_response_tokens": 32, "temperature": 1.0,
                   "batch_size": 16, "lora": {"rank": 8, "alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}},
        "simulator": {"backend": "transformers", "model": "scripted", "retries": 0},
        "tools": {"file": str(tools)},
        "rollout": {"rollouts_per_task": 8},
        "curriculum": {"initial_level": 1, "soft_eps": 0.0, "step": 0,  # one assistant turn per episode
                       "knobs": {"max_assistant_turns": {"scale": 0.0, "min": 1, "max": 1}}},
        "train": {"steps": STEPS, "tasks_per_step": 2, "learning_rate": 1e-3, "kl_coef": 0.0, "micro_batch_size": 8},
    })
    backend = copy.copy(smol_backend)  # the learner puts its adapter on this copy's model
    backend.model = copy.deepcopy(smol_backend.model)
    backend.prefix_cache = PrefixCache(2**30)  # its own kept turns: they belong to this copy's weights

    async def main():
        async with GenerationService(backend, 16) as policy_service, \
                GenerationService(ScriptedBackend(simulator)) as sim_service:
            with Store(tmp_path / "db.sqlite") as store:
                env = Runtime(recipe, store, load_pool(str(tools)),
                              Policy(policy_service, PolicyChat(backend.tokenizer), 1.0, 1.0),
                              SimulatorClient(sim_service, store, recipe.simulator), policy_service, sim_service)
                state = open_run(store, recipe, tmp_path / "out", recipe.seed, fresh=False)
                with recorded_run(store, "train", recipe, recipe.seed, run_id=state.run_id) as run:
                    summary = await run_training(env, run, state, tmp_path / "out", recipe.seed, STEPS, time.perf_counter())
                rewards = [r[0] for r in store.db.execute("SELECT mean_reward FROM steps ORDER BY step")]
                _stored_advantages_are_the_groups(store)
                return summary, rewards

    summary, rewards = asyncio.run(main())
    print("mean reward per step:", rewards)
    assert summary["steps"] == STEPS
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    assert last > first + 0.3, rewards


def _stored_advantages_are_the_groups(store):
    """The run record holds each trajectory's group advantage and each assistant turn's r."""
    from trustee_lite.train.grpo import group_advantages

    rows = store.db.execute("SELECT step, task_index, final_reward, advantage FROM trajectories "
                            "ORDER BY step, task_index, rollout_index").fetchall()
    groups: dict = {}
    for step, task, reward, adv in rows:
        groups.setdefault((step, task), []).append((reward, adv))
    assert len(groups) == 2 * STEPS
    for members in groups.values():
        expected = group_advantages([r for r, _ in members])
        assert [a for _, a in members] == [None if r is None else e for (r, _), e in zip(members, expected)]
    missing = store.db.execute(
        "SELECT count(*) FROM turns JOIN trajectories t ON t.id = turns.trajectory_id "
        "WHERE turns.role = 'assistant' AND t.abort_reason IS NULL AND turns.turn_reward IS NULL").fetchone()[0]
    assert missing == 0
