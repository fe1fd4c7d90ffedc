"""The model families users run (tiny random Qwen3, Qwen2 and Llama models with their families'
templates, tests/model_families.py), through the whole loop: an episode with a tool turn and then
a user turn trains; `simulate` and one `train` step end to end; the tokens trained are the tokens
sampled, with their sampling log-probs; tool results and user turns are masked."""

from __future__ import annotations

import json
import math
import sqlite3

import pytest
import torch
from model_families import FAMILIES
from test_rollout import CALL, episode, tool, user, verdict

from trustee_lite.__main__ import main
from trustee_lite.config import LoraConfig, PolicyConfig, TrainConfig
from trustee_lite.env.chat import PolicyChat
from trustee_lite.lm.hf import TransformersBackend
from trustee_lite.store import decode_floats, decode_ints
from trustee_lite.train.grpo import samples_from
from trustee_lite.train.learner import Learner

THINK = "<think>\nI need the weather first.\n</think>\n\n"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_an_episode_with_a_tool_turn_then_a_user_turn_trains(family, family_dirs, tmp_path):
    backend = TransformersBackend(PolicyConfig(model=str(family_dirs[family])), "policy")
    tok = backend.tokenizer
    first = (THINK if family == "qwen3" else "") + CALL
    traj, asked = episode(tok, tmp_path, [first, "No rain in Paris today.", "Tomorrow too."],
                          {"tool_simulator": [tool("RESULT-TEXT")], "user_simulator": [user("USER-REPLY")],
                           "verifier": [verdict(1)]}, caps=(3, 2, 2), chat=PolicyChat(tok))
    assert [t.role for t in traj.turns] == ["assistant", "tool", "assistant", "user", "assistant"]
    assert not traj.aborted and traj.turns[0].calls[0].name == "get_weather"
    assert asked == ["tool_simulator", "user_simulator", "verifier"]
    eos = tok.decode([tok.eos_token_id])
    ids, mask = traj.token_ids, traj.policy_mask
    assert tok.decode([t for t, m in zip(ids, mask) if m]) == f"{first}{eos}No rain in Paris today.{eos}Tomorrow too.{eos}"
    other = tok.decode([t for t, m in zip(ids, mask) if not m])
    assert "RESULT-TEXT" in other and "USER-REPLY" in other and "No rain" not in other

    learner = Learner(backend, LoraConfig(rank=4, alpha=8, target_modules=["q_proj", "v_proj"]),
                      TrainConfig(learning_rate=1e-2, kl_coef=0.01), 1.0, seed=0)
    (sample,) = samples_from([traj], [1.0])
    assert sample.token_ids == traj.token_ids and sample.policy_mask == traj.policy_mask  # trained = sampled
    before = {k: v.clone() for k, v in learner.model.state_dict().items() if "lora_B" in k}
    stats = learner.update([sample], 1)
    assert math.isfinite(stats.loss) and stats.policy_tokens == sum(mask)
    after = learner.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


RECIPE = """\
name: matrix-{family}
seed: 1
policy:
  model: {model}
  thinking: {thinking}
  max_new_tokens: 24
  max_response_tokens: 48
  batch_size: 4
  lora: {{rank: 4, alpha: 8, target_modules: [q_proj, v_proj]}}
simulator:
  backend: llama_cpp
  model: embedded
  max_new_tokens: 120
  n_ctx: 4096
  reuse_prefix: true
  retries: 1
  max_history_chars: 1500
tools: {{max_result_chars: 128}}
rollout: {{rollouts_per_task: 2}}
simulate: {{episodes: 2}}
train: {{steps: 1, tasks_per_step: 1, task_attempts: 2, learning_rate: 1.0e-3, kl_coef: 0.01, micro_batch_size: 2}}
"""


@pytest.fixture(scope="module")
def shared_db(tmp_path_factory):
    """One database for the families: the task generator's answers do not depend on the policy,
    so the later families take them from the cache."""
    return tmp_path_factory.mktemp("matrix") / "db.sqlite"


@pytest.mark.parametrize("family", list(FAMILIES))
def test_simulate_and_one_train_step_end_to_end(family, family_dirs, shared_db, tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    thinking = "false" if family == "qwen3" else "null"
    recipe.write_text(RECIPE.format(family=family, model=family_dirs[family], thinking=thinking))
    assert main(["simulate", str(recipe), "--db", str(shared_db)]) == 0
    assert main(["train", str(recipe), "--db", str(shared_db), "--out", str(tmp_path / "out")]) == 0
    simulated, trained = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert simulated["episodes"] == 2 and trained["steps"] == 1 and trained["status"] == "done"

    con = sqlite3.connect(shared_db)
    rows = con.execute("SELECT id, token_ids, policy_mask, logprobs, prompt_tokens, abort_reason FROM trajectories "
                       "WHERE run_id IN (?, ?)", [simulated["run_id"], trained["run_id"]]).fetchall()
    assert len(rows) == 4 and not [r for r in rows if r[5] is not None]  # 2 simulated, 2 trained, none aborted
    backend = TransformersBackend(PolicyConfig(model=str(family_dirs[family])), "policy")  # the base: the adapter starts at 0
    tok, worst = backend.tokenizer, 0.0
    for traj_id, token_blob, mask_blob, logprob_blob, prompt_tokens, _ in rows:
        ids, mask, logprobs = decode_ints(token_blob), decode_ints(mask_blob), decode_floats(logprob_blob)
        assert mask[:prompt_tokens] == [0] * prompt_tokens and sum(mask) > 0
        turns = con.execute("SELECT role, content FROM turns WHERE trajectory_id = ? ORDER BY turn_index", [traj_id]).fetchall()
        policy_ids = [t for t, m in zip(ids, mask) if m]
        said = "".join(content for role, content in turns if role == "assistant")
        assert tok.decode([t for t in policy_ids if t not in backend.eos_ids]) == said  # masked = what it wrote
        other = tok.decode([t for t, m in zip(ids, mask) if not m])
        assert all(content in other for role, content in turns if role == "user")  # user turns: not the policy's
        with torch.no_grad():
            logits = backend.model(torch.tensor([ids])).logits[0, :-1].float()
        recomputed = torch.log_softmax(logits, -1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
        positions = [i for i in range(1, len(ids)) if mask[i]]
        worst = max(worst, max(abs(float(recomputed[i - 1]) - logprobs[i]) for i in positions))
    assert worst < 1e-4, worst  # the log-probs the learner starts from are the ones sampled
    step = con.execute("SELECT samples, loss FROM steps WHERE run_id = ?", [trained["run_id"]]).fetchone()
    assert step[0] == 2 and math.isfinite(step[1])  # both episodes trained (the KL term needs no reward spread)
    if family == "qwen3":
        text = tok.decode(decode_ints(rows[0][1]))
        assert "<|im_start|>assistant\n<think>\n\n</think>\n\n" in text  # thinking: false reached the template
