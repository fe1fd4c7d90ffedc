"""Curriculum: the difficulty knobs derived from a level L in [1, 100], and soft sampling."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, replace
from fractions import Fraction

from .recipe import CurriculumConfig, Knob, KnobTable

MIN_LEVEL, MAX_LEVEL = 1, 100

# Knobs that describe the task itself; soft sampling redraws these, never the episode caps.
TASK_KNOBS = ("num_tools", "num_calls", "persona", "ambiguity", "turns")


@dataclass(frozen=True)
class Knobs:
    num_tools: int
    num_calls: int  # approximate number of distinct tool calls the task needs
    persona: int  # 0 expert, 1 beginner, 2 novice
    ambiguity: int  # 0 clear, 1 somewhat ambiguous, 2 highly ambiguous
    turns: int  # expected turns: 0 one or two, 1 a few, 2 many
    num_criteria: int  # verifier criteria judged (the first n of 5)
    system_prompt: int  # 0 detailed guide ... 3 "You are a helpful assistant."
    max_user_turns: int
    max_assistant_turns: int
    max_tool_turns: int


def knob_value(knob: Knob, level: int) -> int:
    """clamp(offset + floor(scale * L)); exact arithmetic so 0.03 * 100 is 3, not 2.999..."""
    raw = knob.offset + math.floor(Fraction(str(knob.scale)) * level)
    return max(knob.min, min(knob.max, raw))


def knobs_at(level: int, table: KnobTable) -> Knobs:
    """Every knob's value at a level."""
    level = max(MIN_LEVEL, min(MAX_LEVEL, level))
    return Knobs(**{name: knob_value(getattr(table, name), level) for name in Knobs.__dataclass_fields__})


def pin_fixed(knobs: Knobs, fixed: list[str] | tuple[str, ...], table: KnobTable) -> Knobs:
    """Pin the named knobs at their maximum (ablations)."""
    return replace(knobs, **{name: getattr(table, name).max for name in fixed})


def sample_task_knobs(level: int, cfg: CurriculumConfig, rng: random.Random) -> Knobs:
    """The knobs for one task: from the level, or with probability eps drawn uniformly
    over the full range of each task knob (one coin per task); fixed aspects win over both."""
    knobs = knobs_at(level, cfg.knobs)
    if rng.random() < cfg.soft_eps:
        drawn = {}
        for name in TASK_KNOBS:
            knob = getattr(cfg.knobs, name)
            drawn[name] = rng.randint(knob.min, knob.max)
        knobs = replace(knobs, **drawn)
    return pin_fixed(knobs, cfg.fixed_aspects, cfg.knobs)
