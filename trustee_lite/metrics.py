"""Figures over trajectories: the simulate summary and a training step's record."""

from __future__ import annotations

import math
from typing import Sequence

from trustee_lite.records import Trajectory


def mean(values) -> float | None:
    """The mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def std(values) -> float | None:
    """The sample standard deviation (n - 1) of the values that are not None; None below two."""
    values = [v for v in values if v is not None]
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def rounded(value: float | None, digits: int = 4) -> float | None:
    """For records and summaries: 4 decimals (None stays None)."""
    return None if value is None else round(value, digits)


def abort_reasons(trajectories: Sequence[Trajectory]) -> dict[str, int]:
    reasons: dict[str, int] = {}
    for t in trajectories:
        if t.aborted:
            reasons[t.abort_reason] = reasons.get(t.abort_reason, 0) + 1
    return reasons


def all_aborted(trajectories: Sequence[Trajectory]) -> str | None:
    """When episodes were played and every one aborted: the reasons with counts and, for each,
    its first concrete cause (`task_generator_invalid x2: prompt of 1,311,181 tokens ...`)."""
    if not trajectories or any(not t.aborted for t in trajectories):
        return None
    causes = {}
    for t in trajectories:
        causes.setdefault(t.abort_reason, " ".join(t.verifier_reasoning.split())[:200])
    counts = abort_reasons(trajectories)
    return "; ".join(f"{reason} x{counts[reason]}" + (f": {cause}" if cause else "") for reason, cause in causes.items())


def episode_figures(trajectories: Sequence[Trajectory]) -> dict:
    """Counts, rewards and success over a set of episodes (aborted ones excluded from rewards)."""
    valid = [t for t in trajectories if not t.aborted]
    return {
        "episodes": len(trajectories),
        "aborted": len(trajectories) - len(valid),
        "abort_reasons": abort_reasons(trajectories),
        "mean_reward": rounded(mean(t.final_reward for t in valid)),
        "std_reward": rounded(std(t.final_reward for t in valid)),
        "success_rate": rounded(mean(1.0 if t.final_reward > 0 else 0.0 for t in valid)),
        "mean_tool_reward": rounded(mean(r for t in valid for r in t.rewards("tool"))),
        "mean_user_reward": rounded(mean(r for t in valid for r in t.rewards("user"))),
        "policy_tokens": sum(t.policy_tokens for t in trajectories),
    }


def time_split(wall_s: float, policy_s: float, simulation_s: float, update_s: float, checkpoint_s: float,
               prefill_s: float = 0.0, decode_s: float = 0.0, compile_s: float = 0.0) -> dict:
    """Seconds of a step by kind: the policy's generation (and, of it, its prompt forwards and
    its token-by-token decoding), simulation, the update, the checkpoint, and the waiting
    (`other_s`: what they do not cover, never negative: on separate devices generation and
    simulation may overlap). `training_s` is update and checkpoint together; `compile_s`, the part
    of generation (either role) spent in calls that compiled a new decode graph."""
    return {
        "wall_s": round(wall_s, 2), "policy_gen_s": round(policy_s, 2), "simulation_s": round(simulation_s, 2),
        "training_s": round(update_s + checkpoint_s, 2),
        "other_s": round(max(0.0, wall_s - policy_s - simulation_s - update_s - checkpoint_s), 2),
        "policy_prefill_s": round(prefill_s, 2), "policy_decode_s": round(decode_s, 2),
        "update_s": round(update_s, 2), "checkpoint_s": round(checkpoint_s, 2), "compile_s": round(compile_s, 2),
    }
