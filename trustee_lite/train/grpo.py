"""GRPO in one place, as small pure functions: group advantages, the training samples they
make, the clipped surrogate and the KL penalty. (learner.py runs them on the model: forward,
backward, optimizer step.)

Advantages and samples are plain Python (no torch). The loss functions take tensors of
per-token values (log-probs, masks) and never see a model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from trustee_lite.config import ADVANTAGE_MODES
from trustee_lite.metrics import mean, std

log = logging.getLogger(__name__)

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


def turn_advantage(mode: str, advantage: float, turn_reward: float) -> float:
    """The advantage of a policy token in an assistant turn whose reward is r (the reference's
    "tgrpo" modes). uniform: A (the paper's setting); linear: A r; relu: A r where A r > 0,
    else 0; sign: A where A r > 0, else 0; sign-linear: A (r + 1) / 2 when A > 0,
    A (1 - r) / 2 when A < 0 (a good turn keeps a good trajectory's credit, a bad turn takes a
    bad one's blame)."""
    a, r = advantage, turn_reward
    if mode == "uniform":
        return a
    if mode == "linear":
        return a * r
    if mode == "relu":
        return a * r if a * r > 0 else 0.0
    if mode == "sign":
        return a if a * r > 0 else 0.0
    if mode == "sign-linear":
        return a * (r + 1) / 2 if a > 0 else a * (1 - r) / 2 if a < 0 else 0.0
    raise ValueError(f"unknown advantage mode {mode!r}; one of {', '.join(ADVANTAGE_MODES)}")


def turn_spans(policy_mask: Sequence[int]) -> list[tuple[int, int]]:
    """[start, end) of each run of policy tokens: one per assistant turn, in order (a turn's
    tokens are contiguous, and every turn is followed by tokens the policy did not write)."""
    spans, start = [], None
    for i, m in enumerate(policy_mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(policy_mask)))
    return spans


def token_advantages(advantage: float, policy_mask: Sequence[int], turn_rewards: Sequence[float] | None = None,
                     mode: str = "uniform") -> list[float]:
    """A trajectory's advantage per token: 0 off the policy's own tokens; on them A, scaled by
    the reward of the turn the token belongs to as `mode` says."""
    if mode == "uniform" or turn_rewards is None:
        return [advantage if m else 0.0 for m in policy_mask]
    spans = turn_spans(policy_mask)
    if len(spans) != len(turn_rewards):
        raise ValueError(f"{len(spans)} runs of policy tokens for {len(turn_rewards)} assistant turns")
    out = [0.0] * len(policy_mask)
    for (start, end), r in zip(spans, turn_rewards):
        value = turn_advantage(mode, advantage, r)
        out[start:end] = [value] * (end - start)
    return out


@dataclass(frozen=True)
class Sample:
    """One trajectory as training data."""

    token_ids: tuple[int, ...]
    policy_mask: tuple[int, ...]
    old_logprobs: tuple[float, ...]  # recorded when the policy sampled the tokens
    advantage: float  # the trajectory's group advantage
    per_token: tuple[float, ...] | None = None  # the advantage of each token; None = A on every policy token

    def token_advantages(self) -> list[float]:
        return list(self.per_token) if self.per_token is not None else token_advantages(self.advantage, self.policy_mask)

    @property
    def carries_gradient(self) -> bool:
        return any(self.per_token) if self.per_token is not None else self.advantage != 0.0


def step_advantages(groups) -> list[list[float]]:
    """Each task's rollouts (a group) get their group advantages."""
    return [group_advantages([t.final_reward for t in group]) for group in groups]


def training_samples(groups, advantages=None, mode: str = "uniform") -> list[Sample]:
    """The samples of one step: each trajectory with its group advantage, spread over the
    policy's own tokens as `mode` says (by the reward of each assistant turn)."""
    advantages = advantages if advantages is not None else step_advantages(groups)
    trajectories = [t for group in groups for t in group]
    return samples_from(trajectories, [a for group in advantages for a in group], mode)


def samples_from(trajectories, advantages, mode: str = "uniform") -> list[Sample]:
    """Training samples: trajectories that are not aborted and have policy tokens."""
    out = []
    for traj, adv in zip(trajectories, advantages):
        if traj.aborted or adv is None or not traj.policy_tokens:
            continue
        per_token = None
        if mode != "uniform":
            try:
                per_token = tuple(token_advantages(adv, traj.policy_mask, traj.assistant_turn_rewards(), mode))
            except ValueError as err:  # never expected; one odd trajectory must not stop the run
                log.warning("task %d rollout %d: %s; its advantage is spread uniformly", traj.task_index,
                            traj.rollout_index, err)
        out.append(Sample(traj.token_ids, traj.policy_mask, traj.logprobs, adv, per_token))
    return out


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
