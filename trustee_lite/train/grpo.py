"""GRPO in one place, as small pure functions: group advantages, the training samples they
make, the clipped surrogate and the KL penalty. (learner.py runs them on the model: forward,
backward, optimizer step.)

Advantages and samples are plain Python (no torch). The loss functions take tensors of
per-token values (log-probs, masks) and never see a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from trustee_lite.metrics import mean, std

ADV_EPS = 1e-6


def group_advantages(rewards: Sequence[float | None]) -> list[float]:
    """GRPO advantages for one task's rollouts: (r - mean) / (std + 1e-6) over the valid ones.

    ``None`` marks an aborted rollout: it gets 0 and stays out of the mean and std. A group with
    fewer than two valid rollouts carries no signal: every advantage is 0. The std is the sample
    std (n - 1), as in the reference implementation (verl).
    """
    spread = std(rewards)
    if spread is None:  # fewer than two valid rollouts
        return [0.0] * len(rewards)
    centre = mean(rewards)
    return [0.0 if r is None else (r - centre) / (spread + ADV_EPS) for r in rewards]


@dataclass(frozen=True)
class Sample:
    """One trajectory as training data."""

    token_ids: tuple[int, ...]
    policy_mask: tuple[int, ...]
    old_logprobs: tuple[float, ...]  # recorded when the policy sampled the tokens
    advantage: float


def training_samples(groups) -> list[Sample]:
    """The samples of one step: each task's rollouts (a group) get their group advantages,
    spread later over the policy's own tokens."""
    trajectories = [t for group in groups for t in group]
    advantages = [a for group in groups for a in group_advantages([t.final_reward for t in group])]
    return samples_from(trajectories, advantages)


def samples_from(trajectories, advantages) -> list[Sample]:
    """Training samples: trajectories that are not aborted and have policy tokens."""
    out = []
    for traj, adv in zip(trajectories, advantages):
        if traj.aborted or adv is None or not traj.policy_tokens:
            continue
        out.append(Sample(traj.token_ids, traj.policy_mask, traj.logprobs, adv))
    return out


def token_advantages(advantage: float, policy_mask: Sequence[int]) -> list[float]:
    """Spread a trajectory's advantage uniformly over the policy's own tokens (0 elsewhere)."""
    return [advantage if m else 0.0 for m in policy_mask]


def clipped_surrogate(logp, old_logp, advantages, mask, clip: float, normalizer: float):
    """Token-sum of the PPO clipped objective (to minimise) divided by ``normalizer``.

    Per token: -min(ratio * A, clip(ratio, 1 - clip, 1 + clip) * A), ratio = exp(logp - old_logp).
    With ``normalizer`` = the number of policy tokens in the whole mini-batch, summing this over
    micro-batches gives the token-mean loss of the mini-batch (gradient accumulation is exact).
    Returns (loss, clipped-token count).
    """
    import torch

    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1.0 - clip, 1.0 + clip) * advantages
    per_token = -torch.minimum(unclipped, clipped)
    was_clipped = ((clipped < unclipped) & (mask > 0)).sum()
    return (per_token * mask).sum() / normalizer, was_clipped


def kl_low_variance(logp, ref_logp, mask, normalizer: float):
    """Token-sum of the k3 KL estimator, exp(ref - logp) - (ref - logp) - 1 (>= 0), / normalizer."""
    import torch

    delta = ref_logp - logp
    per_token = torch.exp(delta) - delta - 1.0
    return (per_token * mask).sum() / normalizer
