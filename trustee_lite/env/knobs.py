"""The difficulty knobs of a task: each knob's value at a curriculum level L in [1, 100] (the knob
table of docs/method.md, config.KnobTable), pinned knobs, and soft sampling. The level itself is
moved by the curriculum (train/curriculum.py)."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from fractions import Fraction

from trustee_lite.config import KNOB_NAMES, CurriculumConfig, KnobRule, KnobTable
from trustee_lite.records import KnobValues

MIN_LEVEL, MAX_LEVEL = 1, 100

# Knobs that describe the task itself; soft sampling redraws these, never the episode caps.
TASK_KNOBS = ("num_tools", "num_calls", "persona", "ambiguity", "turns")


def knob_value(knob: KnobRule, level: int) -> int:
    """clamp(offset + floor(scale * L)); exact arithmetic so 0.03 * 100 is 3, not 2.999..."""
    raw = knob.offset + math.floor(Fraction(str(knob.scale)) * level)
    return max(knob.min, min(knob.max, raw))


def knobs_at(level: int, table: KnobTable) -> KnobValues:
    """Every knob's value at a level."""
    level = max(MIN_LEVEL, min(MAX_LEVEL, level))
    return KnobValues(**{name: knob_value(getattr(table, name), level) for name in KNOB_NAMES})


def pin_fixed(knobs: KnobValues, fixed: list[str] | tuple[str, ...], table: KnobTable) -> KnobValues:
    """Pin the named knobs at their maximum (ablations)."""
    return replace(knobs, **{name: getattr(table, name).max for name in fixed})


def sample_task_knobs(level: int, cfg: CurriculumConfig, rng: random.Random) -> KnobValues:
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
