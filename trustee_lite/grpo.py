"""GRPO as small pure functions: group advantages, the clipped surrogate, the KL penalty.

Advantages are plain Python (no torch). The loss functions take tensors of per-token values
(log-probs, masks) and never see a model.
"""

from __future__ import annotations

import math
from typing import Sequence

ADV_EPS = 1e-6


def group_advantages(rewards: Sequence[float | None]) -> list[float]:
    """GRPO advantages for one task's rollouts: (r - mean) / (std + 1e-6) over the valid ones.

    ``None`` marks an aborted rollout: it gets 0 and stays out of the mean and std. A group with
    fewer than two valid rollouts carries no signal: every advantage is 0. The std is the sample
    std (n - 1), as in the reference implementation (verl).
    """
    valid = [r for r in rewards if r is not None]
    if len(valid) < 2:
        return [0.0] * len(rewards)
    mean = sum(valid) / len(valid)
    std = math.sqrt(sum((r - mean) ** 2 for r in valid) / (len(valid) - 1))
    return [0.0 if r is None else (r - mean) / (std + ADV_EPS) for r in rewards]


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
