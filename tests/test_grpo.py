"""GRPO math on numbers worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from trustee_lite.train.grpo import clipped_surrogate, group_advantages, kl_low_variance, token_advantages


def approx(values, expected, tol=1e-6):
    assert len(values) == len(expected)
    assert all(abs(v - e) < tol for v, e in zip(values, expected)), (values, expected)


def test_normal_group():
    # mean 0, sample std sqrt(4/3) = 1.1547005; 1 / (1.1547005 + 1e-6) = 0.8660247
    approx(group_advantages([1, -1, 1, -1]), [0.8660247, -0.8660247, 0.8660247, -0.8660247])


def test_three_level_group():
    # mean 0, sample std sqrt((1 + 0 + 1) / 2) = 1
    approx(group_advantages([1, 0, -1]), [1 / (1 + 1e-6), 0.0, -1 / (1 + 1e-6)])


def test_uneven_group():
    # rewards 1, 1, 1, -1: mean 0.5; deviations .5 .5 .5 -1.5; sample var (3 * .25 + 2.25) / 3 = 1; std 1
    approx(group_advantages([1, 1, 1, -1]), [0.5 / (1 + 1e-6)] * 3 + [-1.5 / (1 + 1e-6)])


def test_all_equal_rewards_give_zero():
    assert group_advantages([1, 1, 1, 1]) == [0.0, 0.0, 0.0, 0.0]
    assert group_advantages([-1, -1]) == [0.0, 0.0]


def test_single_valid_rollout_gives_zero():
    assert group_advantages([1, None, None]) == [0.0, 0.0, 0.0]
    assert group_advantages([0.5]) == [0.0]


def test_aborted_members_are_left_out_and_get_zero():
    # valid rewards 1, -1, 0: mean 0, std 1
    approx(group_advantages([1, None, -1, 0]), [1 / (1 + 1e-6), 0.0, -1 / (1 + 1e-6), 0.0])


def test_advantage_is_spread_over_policy_tokens_only():
    assert token_advantages(0.5, [0, 0, 1, 1, 0, 1]) == [0.0, 0.0, 0.5, 0.5, 0.0, 0.5]


# Turn-level advantage modes: a trajectory with three assistant turns whose rewards are
# r = 1, 0, -1, for A = +0.8 and A = -0.8 (rows: mode, then the three turns' token advantages).
MODES = [
    ("uniform", [0.8, 0.8, 0.8], [-0.8, -0.8, -0.8]),
    ("linear", [0.8, 0.0, -0.8], [-0.8, 0.0, 0.8]),  # A r
    ("relu", [0.8, 0.0, 0.0], [0.0, 0.0, 0.8]),  # A r where positive
    ("sign", [0.8, 0.0, 0.0], [0.0, 0.0, -0.8]),  # A where A r > 0
    ("sign-linear", [0.8, 0.4, 0.0], [0.0, -0.4, -0.8]),  # A (r+1)/2 for A > 0; A (1-r)/2 for A < 0
]
MASK = [0, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1]  # prompt, turn 1 (2 tokens), user, turn 2 (1), tool, turn 3 (3)


@pytest.mark.parametrize("mode, positive, negative", MODES, ids=[m[0] for m in MODES])
def test_each_advantage_mode_by_hand(mode, positive, negative):
    for adv, per_turn in ((0.8, positive), (-0.8, negative)):
        a1, a2, a3 = per_turn
        approx(token_advantages(adv, MASK, [1.0, 0.0, -1.0], mode), [0, 0, a1, a1, 0, 0, a2, 0, a3, a3, a3])
    assert token_advantages(0.0, MASK, [1.0, 0.0, -1.0], mode) == [0.0] * len(MASK)


def test_sign_linear_on_a_fractional_turn_reward():
    # r = 0.5 (two calls graded 1 and 0): A = 2 -> 2 * 1.5 / 2 = 1.5; A = -2 -> -2 * 0.5 / 2 = -0.5
    assert token_advantages(2.0, [1], [0.5], "sign-linear") == [1.5]
    assert token_advantages(-2.0, [1], [0.5], "sign-linear") == [-0.5]


def test_turn_rewards_and_token_runs_must_agree():
    with pytest.raises(ValueError, match="3 runs of policy tokens for 2 assistant turns"):
        token_advantages(1.0, MASK, [1.0, 0.0], "linear")


def test_clipped_surrogate_by_hand():
    logp = torch.tensor([math.log(1.5), math.log(0.5), 0.0])
    old = torch.zeros(3)
    adv = torch.tensor([1.0, -1.0, 2.0])
    mask = torch.tensor([1.0, 1.0, 0.0])
    # token 1: ratio 1.5, A = 1: min(1.5, 1.2) = 1.2 -> -1.2 (clipped)
    # token 2: ratio 0.5, A = -1: min(-0.5, -0.8) = -0.8 -> +0.8 (clipped)
    # token 3: masked out. Sum -0.4, over 2 tokens: -0.2
    loss, clipped = clipped_surrogate(logp, old, adv, mask, clip=0.2, normalizer=2.0)
    assert loss.item() == pytest.approx(-0.2, abs=1e-6)
    assert clipped.item() == 2


def test_clipping_never_helps_the_objective():
    # ratio 0.5 with A = 1: unclipped 0.5 is below clipped 0.8, so the pessimistic 0.5 counts.
    loss, clipped = clipped_surrogate(torch.tensor([math.log(0.5)]), torch.zeros(1), torch.ones(1), torch.ones(1), 0.2, 1.0)
    assert loss.item() == pytest.approx(-0.5, abs=1e-6) and clipped.item() == 0


def test_on_policy_loss_is_minus_mean_advantage():
    adv = torch.tensor([0.5, -1.0, 2.0, 0.0])
    loss, _ = clipped_surrogate(torch.zeros(4), torch.zeros(4), adv, torch.tensor([1.0, 1.0, 1.0, 0.0]), 0.2, 3.0)
    assert loss.item() == pytest.approx(-(0.5 - 1.0 + 2.0) / 3, abs=1e-6)


def test_micro_batches_add_up_to_the_mini_batch_token_mean():
    logp, old = torch.tensor([0.1, -0.2, 0.05, 0.3, -0.1]), torch.zeros(5)
    adv, mask = torch.tensor([1.0, 1.0, -2.0, 0.5, 0.5]), torch.ones(5)
    whole, _ = clipped_surrogate(logp, old, adv, mask, 0.2, 5.0)
    first, _ = clipped_surrogate(logp[:2], old[:2], adv[:2], mask[:2], 0.2, 5.0)
    second, _ = clipped_surrogate(logp[2:], old[2:], adv[2:], mask[2:], 0.2, 5.0)
    assert (first + second).item() == pytest.approx(whole.item(), abs=1e-7)


def test_kl_low_variance_by_hand():
    # delta = ref - logp: ln 2 -> 2 - ln 2 - 1 = 0.3068528; 0 -> 0; -ln 2 -> 0.5 + ln 2 - 1 = 0.1931472
    logp = torch.tensor([0.0, 0.0, math.log(2.0)])
    ref = torch.tensor([math.log(2.0), 0.0, 0.0])
    kl = kl_low_variance(logp, ref, torch.ones(3), normalizer=3.0)
    assert kl.item() == pytest.approx((0.3068528 + 0.0 + 0.1931472) / 3, abs=1e-6)


def test_kl_is_zero_for_identical_policies_and_ignores_masked_tokens():
    logp = torch.tensor([-1.0, -2.0, -0.5])
    assert kl_low_variance(logp, logp, torch.ones(3), 3.0).item() == 0.0
    assert kl_low_variance(logp, logp + torch.tensor([0.0, 0.0, 5.0]), torch.tensor([1.0, 1.0, 0.0]), 2.0).item() == 0.0


def test_samples_carry_the_modes_token_advantages():
    from trustee_lite.records import ToolCall, ToolResult, Trajectory, Turn
    from trustee_lite.train.grpo import samples_from

    call = ToolCall(name="weather", arguments={"city": "Paris"})
    turns = (Turn("assistant", "<tool_call>...</tool_call>", calls=(call,)),
             Turn("tool", "", results=(ToolResult(call, "{}", 1),), reward=1.0),
             Turn("assistant", "Dry."), Turn("user", "", reward=0.0))
    traj = Trajectory(0, 0, turns, "user_done", 1.0, token_ids=(1, 2, 3, 4, 5, 6), policy_mask=(0, 1, 0, 1, 1, 0),
                      logprobs=(0.0,) * 6)
    (uniform,) = samples_from([traj], [0.8])
    (linear,) = samples_from([traj], [0.8], "linear")
    assert uniform.token_advantages() == [0.0, 0.8, 0.0, 0.8, 0.8, 0.0] and uniform.carries_gradient
    assert linear.token_advantages() == [0.0, 0.8, 0.0, 0.0, 0.0, 0.0] and linear.carries_gradient
    (flat,) = samples_from([traj], [-0.8], "relu")  # A r <= 0 everywhere: nothing to learn
    assert not flat.carries_gradient


def test_a_trajectory_whose_turns_and_token_runs_disagree_falls_back_to_uniform():
    from trustee_lite.records import Trajectory, Turn
    from trustee_lite.train.grpo import samples_from

    turns = (Turn("assistant", "a"), Turn("user", "", reward=1.0), Turn("assistant", "b"), Turn("user", "", reward=0.0))
    traj = Trajectory(0, 0, turns, "user_done", 1.0, token_ids=(1, 2, 3), policy_mask=(0, 1, 1), logprobs=(0.0,) * 3)
    (sample,) = samples_from([traj], [0.5], "linear")
    assert sample.per_token is None and sample.token_advantages() == [0.0, 0.5, 0.5]
