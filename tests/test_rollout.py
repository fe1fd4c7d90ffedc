"""Episodes with a scripted policy and scripted simulator (real tokenizer): turn order, caps,
rewards, aborts, and the token mask."""

from __future__ import annotations

import asyncio
import json

import pytest
from scripted import ScriptedBackend, role_of
from test_role_output import make_task

from trustee_lite.config import KnobTable, SimulatorConfig
from trustee_lite.env.chat import PolicyChat
from trustee_lite.env.episode import EpisodeLimits, Policy, run_episode
from trustee_lite.env.knobs import knobs_at
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.lm import GenerationService
from trustee_lite.store import Store

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
LIMITS = dict(max_new_tokens=64, max_response_tokens=512, max_result_chars=512, max_history_chars=4000)


def episode(tokenizer, tmp_path, policy_turns, sim_answers, caps=(4, 2, 2), knobs_level=100, chat=None,
            sim_cfg=None, prompts=None, policy_backend=None, **limits):
    """Run one episode; policy_turns is a list of texts, sim_answers maps role -> list of JSON texts.
    `prompts`, a list, receives every simulator request's prompt text; `policy_backend` replaces
    the scripted policy (policy_turns is then unused)."""
    turns = list(policy_turns)
    answers = {role: list(texts) for role, texts in sim_answers.items()}
    asked = []

    def sim(request):
        role = role_of(request)
        asked.append(role)
        if prompts is not None:
            prompts.append(request.messages[-1]["content"])
        queue = answers.get(role)
        return queue.pop(0) if queue else RuntimeError(f"no scripted answer for {role}")

    policy_backend = policy_backend or ScriptedBackend(lambda r: turns.pop(0), tokenizer=tokenizer)
    sim_backend = ScriptedBackend(sim)
    task = make_task(knobs=knobs_at(knobs_level, KnobTable()))
    max_assistant, max_user, max_tool = caps
    lim = EpisodeLimits(max_assistant_turns=max_assistant, max_user_turns=max_user, max_tool_turns=max_tool,
                        **{**LIMITS, **limits})

    async def main():
        async with GenerationService(policy_backend) as ps, GenerationService(sim_backend) as ss:
            with Store(tmp_path / "r.sqlite") as store:
                client = SimulatorClient(ss, store, sim_cfg or SimulatorConfig(retries=0))
                policy = Policy(ps, chat or PolicyChat(tokenizer), 1.0, 1.0)
                return await run_episode(task, 0, policy, client, lim, run_seed=0)

    return asyncio.run(main()), asked


def tool(result, reward=1):
    return json.dumps({"result": result, "reward": reward})


def user(response, reward=1):
    return json.dumps({"response": response, "reward": reward})


def verdict(reward):
    return json.dumps({"reasoning": "checked", "reward": reward})


def test_tool_call_then_answer_then_user_done(smol_tokenizer, tmp_path):
    traj, asked = episode(smol_tokenizer, tmp_path, [CALL, "No rain in Paris today."],
                          {"tool_simulator": [tool('{"rain": false}')], "user_simulator": [user("")],
                           "verifier": [verdict(1)]})
    assert [t.role for t in traj.turns] == ["assistant", "tool", "assistant", "user"]
    assert asked == ["tool_simulator", "user_simulator", "verifier"]
    assert traj.end_reason == "user_done" and traj.final_reward == 1.0 and not traj.aborted
    assert traj.rewards("tool") == [1.0] and traj.rewards("user") == [1.0]


def test_mask_marks_exactly_the_policy_tokens(smol_tokenizer, tmp_path):
    traj, _ = episode(smol_tokenizer, tmp_path, [CALL, "No rain there today.", "Glad to help."],
                      {"tool_simulator": [tool("RESULT-TEXT")], "user_simulator": [user("USER-REPLY")],
                       "verifier": [verdict(1)]}, caps=(3, 2, 2))
    assert [t.role for t in traj.turns] == ["assistant", "tool", "assistant", "user", "assistant"]
    ids, mask = traj.token_ids, traj.policy_mask
    assert len(ids) == len(mask) == len(traj.logprobs)
    policy_text = smol_tokenizer.decode([t for t, m in zip(ids, mask) if m])
    other_text = smol_tokenizer.decode([t for t, m in zip(ids, mask) if not m])
    # The policy's tokens are its three turns (and their end tokens), nothing else.
    assert policy_text == f"{CALL}<|im_end|>No rain there today.<|im_end|>Glad to help.<|im_end|>"
    assert "RESULT-TEXT" in other_text and "USER-REPLY" in other_text
    assert "No rain there" not in other_text and "Glad to help" not in other_text
    assert all(lp == 0.0 for lp, m in zip(traj.logprobs, mask) if not m)
    assert all(lp == -0.5 for lp, m in zip(traj.logprobs, mask) if m)
    assert traj.policy_tokens == sum(mask) and traj.prompt_tokens == mask.index(1)


def test_unknown_tool_gets_an_error_without_asking_the_simulator(smol_tokenizer, tmp_path):
    bad = '<tool_call>{"name": "launch_rocket", "arguments": {}}</tool_call>'
    traj, asked = episode(smol_tokenizer, tmp_path, [bad, "Sorry."],
                          {"user_simulator": [user("")], "verifier": [verdict(-1)]})
    tool_turn = traj.turns[1]
    assert tool_turn.reward == -1.0 and "unknown tool 'launch_rocket'" in tool_turn.results[0].result
    assert "tool_simulator" not in asked


def test_several_calls_in_one_turn_are_simulated_and_averaged(smol_tokenizer, tmp_path):
    two = CALL + "\n" + CALL.replace("Paris", "Rome")
    traj, asked = episode(smol_tokenizer, tmp_path, [two, "Both dry."],
                          {"tool_simulator": [tool("a", 1), tool("b", 0)], "user_simulator": [user("")],
                           "verifier": [verdict(1)]})
    assert len(traj.turns[1].results) == 2 and traj.turns[1].reward == 0.5
    assert asked.count("tool_simulator") == 2


def test_calls_past_the_cap_are_answered_by_code_with_minus_one(smol_tokenizer, tmp_path):
    three = "\n".join(CALL.replace("Paris", city) for city in ("Paris", "Rome", "Oslo"))
    traj, asked = episode(smol_tokenizer, tmp_path, [three, "All dry."],
                          {"tool_simulator": [tool("a", 1), tool("b", 1)], "user_simulator": [user("")],
                           "verifier": [verdict(1)]}, max_parallel_calls=2, max_new_tokens=256)
    results = traj.turns[1].results
    assert [r.reward for r in results] == [1, 1, -1] and "at most 2 tool calls" in results[2].result
    assert asked.count("tool_simulator") == 2 and traj.turns[1].reward == pytest.approx(1 / 3)


def test_each_assistant_turn_gets_the_reward_of_what_answered_it(smol_tokenizer, tmp_path):
    """r of a turn: its calls' mean reward (a call past the cap counts -1), the user's grade of a
    turn without calls, and the final reward for a turn nobody answered (its calls cut by the
    tool-turn cap)."""
    two = CALL + "\n" + CALL.replace("Paris", "Rome")
    traj, _ = episode(smol_tokenizer, tmp_path, [two, "Which day?", CALL],
                      {"tool_simulator": [tool("dry", 1)], "user_simulator": [user("Today.", 0)],
                       "verifier": [verdict(1)]}, caps=(5, 2, 1), max_parallel_calls=1, max_new_tokens=256)
    assert [t.role for t in traj.turns] == ["assistant", "tool", "assistant", "user", "assistant"]
    assert traj.end_reason == "max_tool_turns" and traj.final_reward == 1.0
    assert traj.assistant_turn_rewards() == [0.0, 0.0, 1.0]  # mean(1, -1); the user's 0; the verdict


def test_malformed_call_is_simulated_and_graded_minus_one(smol_tokenizer, tmp_path):
    traj, _ = episode(smol_tokenizer, tmp_path, ['<tool_call>{"name": "get_weather", "arguments": {oops}</tool_call>', "Hm."],
                      {"tool_simulator": [tool("Error: bad request", 1)], "user_simulator": [user("")],
                       "verifier": [verdict(-1)]})
    assert traj.turns[1].results[0].call.malformed and traj.turns[1].reward == -1.0


def test_no_tool_call_gets_minus_one_without_the_verifier(smol_tokenizer, tmp_path):
    traj, asked = episode(smol_tokenizer, tmp_path, ["It is probably sunny."], {"user_simulator": [user("")]})
    assert traj.final_reward == -1.0 and "verifier" not in asked


def test_assistant_turn_cap_ends_the_episode(smol_tokenizer, tmp_path):
    traj, asked = episode(smol_tokenizer, tmp_path, ["Which day?", "Which city?"],
                          {"user_simulator": [user("Today."), user("Paris.")]}, caps=(2, 3, 1))
    assert traj.end_reason == "max_assistant_turns" and asked == ["user_simulator"]
    assert [t.role for t in traj.turns] == ["assistant", "user", "assistant"]


def test_user_turn_cap_ends_the_episode(smol_tokenizer, tmp_path):
    traj, _ = episode(smol_tokenizer, tmp_path, ["Which day?", "Which city?"],
                      {"user_simulator": [user("Today.")]}, caps=(5, 1, 1))
    assert traj.end_reason == "max_user_turns"


def test_tool_turn_cap_ends_the_episode(smol_tokenizer, tmp_path):
    traj, _ = episode(smol_tokenizer, tmp_path, [CALL, CALL], {"tool_simulator": [tool("x")], "verifier": [verdict(0)]},
                      caps=(5, 1, 1))
    assert traj.end_reason == "max_tool_turns" and traj.final_reward == 0.0


def test_response_token_budget_ends_the_episode(smol_tokenizer, tmp_path):
    long_turn = "word " * 200
    traj, _ = episode(smol_tokenizer, tmp_path, [long_turn], {}, max_response_tokens=30)
    assert traj.end_reason == "token_budget" and traj.policy_tokens == 30


def test_simulator_failure_aborts_and_keeps_the_trajectory(smol_tokenizer, tmp_path):
    traj, _ = episode(smol_tokenizer, tmp_path, [CALL], {"tool_simulator": ["not json"]})
    assert traj.aborted and traj.abort_reason == "tool_simulator_invalid" and traj.final_reward is None
    assert traj.end_reason == "aborted" and len(traj.turns) == 1 and traj.policy_tokens > 0


def test_simulator_roles_see_the_policy_turns_without_think_blocks_unless_told(smol_tokenizer, tmp_path):
    """strip_thinking (default on): the roles never read the policy's private reasoning; the
    trained tokens keep it either way, and a call written after the think block counts."""
    from trustee_lite.config import SimulatorConfig

    assert SimulatorConfig().strip_thinking is True
    first = "<think>\nSECRET-PLAN\n</think>\n\n" + CALL
    for strip in (True, False):
        prompts: list[str] = []
        traj, _ = episode(smol_tokenizer, tmp_path / str(strip), [first, "Dry all day."],
                          {"tool_simulator": [tool("dry")], "user_simulator": [user("")], "verifier": [verdict(1)]},
                          sim_cfg=SimulatorConfig(retries=0, strip_thinking=strip), prompts=prompts)
        assert len(prompts) == 3 and traj.turns[0].calls[0].name == "get_weather"
        assert all(("SECRET-PLAN" in p) == (not strip) for p in prompts)
        assert "SECRET-PLAN" in smol_tokenizer.decode(traj.token_ids)
