"""Curriculum knobs on hand-computed numbers; soft sampling ranges; fixed aspects."""

from __future__ import annotations

import random

import pytest

from trustee_lite.config import CurriculumConfig, KnobRule, KnobTable
from trustee_lite.env.knobs import knob_value, knobs_at, sample_task_knobs
from trustee_lite.records import KnobValues

TABLE = KnobTable()

# Hand-computed from the knob table (docs/method.md), e.g. level 67: num_tools floor(6.7)=6,
# calls floor(2.01)=2, persona floor(1.34)=1, criteria 1+floor(2.68)=3, system floor(2.01)=2,
# user floor(2.01)=2, assistant max(2, floor(4.02))=4, tool floor(2.01)=2.
EXPECTED = {
    #      tools calls persona ambig turns criteria system user asst tool
    1: (1, 1, 0, 0, 0, 1, 0, 1, 2, 1),
    22: (2, 1, 0, 0, 0, 1, 0, 1, 2, 1),
    34: (3, 1, 0, 0, 0, 2, 1, 1, 2, 1),
    52: (5, 1, 1, 1, 1, 3, 1, 1, 3, 1),
    67: (6, 2, 1, 1, 1, 3, 2, 2, 4, 2),
    100: (10, 3, 2, 2, 2, 5, 3, 3, 6, 3),
}


@pytest.mark.parametrize("level", sorted(EXPECTED))
def test_knobs_at_level_match_the_table(level):
    assert knobs_at(level, TABLE) == KnobValues(*EXPECTED[level])


def test_level_outside_range_is_clamped():
    assert knobs_at(0, TABLE) == knobs_at(1, TABLE)
    assert knobs_at(250, TABLE) == knobs_at(100, TABLE)


def test_knob_value_uses_exact_arithmetic():
    # 0.29 * 100 is 28.999999999999996 in floating point; the knob must say 29.
    assert knob_value(KnobRule(scale=0.29, min=0, max=100), 100) == 29
    assert knob_value(KnobRule(scale=0.06, min=2, max=6), 50) == 3


def test_knob_value_clamps_to_min_and_max():
    knob = KnobRule(scale=0.5, offset=1, min=3, max=7)
    assert knob_value(knob, 1) == 3  # 1 + 0 -> raised to min
    assert knob_value(knob, 10) == 6  # 1 + 5
    assert knob_value(knob, 40) == 7  # 1 + 20 -> capped


def test_soft_sampling_with_eps_zero_is_the_level():
    cfg = CurriculumConfig(soft_eps=0.0)
    rng = random.Random(0)
    for level in (1, 50, 100):
        assert sample_task_knobs(level, cfg, rng) == knobs_at(level, TABLE)


def test_soft_sampling_covers_full_ranges_of_task_knobs_only():
    cfg = CurriculumConfig(soft_eps=1.0)
    rng = random.Random(7)
    seen = {name: set() for name in ("num_tools", "num_calls", "persona", "ambiguity", "turns")}
    for _ in range(2000):
        knobs = sample_task_knobs(1, cfg, rng)
        for name in seen:
            seen[name].add(getattr(knobs, name))
        # Episode caps and verifier/system settings still follow the level.
        assert (knobs.num_criteria, knobs.system_prompt, knobs.max_assistant_turns) == (1, 0, 2)
    assert seen == {
        "num_tools": set(range(1, 11)), "num_calls": {1, 2, 3}, "persona": {0, 1, 2},
        "ambiguity": {0, 1, 2}, "turns": {0, 1, 2},
    }


def test_soft_sampling_happens_with_probability_eps():
    cfg = CurriculumConfig(soft_eps=0.5)
    rng = random.Random(3)
    at_level = knobs_at(1, TABLE)
    soft = sum(sample_task_knobs(1, cfg, rng) != at_level for _ in range(4000))
    # A soft draw equals the level-1 knobs with probability 1/(10*3*3*3*3) = 1/810, so soft
    # draws that differ are about 0.5 * 4000 * (809/810) = 1997.5; allow 4 standard deviations.
    assert abs(soft - 1997.5) < 4 * (4000 * 0.25) ** 0.5


def test_fixed_aspects_pin_knobs_at_their_maximum():
    cfg = CurriculumConfig(soft_eps=1.0, fixed_aspects=["num_tools", "max_assistant_turns"])
    rng = random.Random(1)
    for _ in range(50):
        knobs = sample_task_knobs(1, cfg, rng)
        assert knobs.num_tools == 10 and knobs.max_assistant_turns == 6


from trustee_lite.train.curriculum import SuccessEstimator, next_level, success_rewards  # noqa: E402


def test_level_moves_up_when_success_reaches_the_up_threshold():
    assert next_level(10, 0.5, 3, 0.5, 0.0) == 13
    assert next_level(10, 0.9, 3, 0.5, 0.0) == 13


def test_level_moves_down_when_success_at_or_below_zero():
    assert next_level(10, 0.0, 3, 0.5, 0.0) == 7
    assert next_level(10, -0.6, 3, 0.5, 0.0) == 7


def test_level_stays_between_thresholds_or_without_signal():
    assert next_level(10, 0.2, 3, 0.5, 0.0) == 10
    assert next_level(10, None, 3, 0.5, 0.0) == 10


def test_level_has_a_floor_and_a_cap():
    assert next_level(2, -1.0, 3, 0.5, 0.0) == 1
    assert next_level(1, -1.0, 3, 0.5, 0.0) == 1
    assert next_level(99, 1.0, 3, 0.5, 0.0) == 100
    assert next_level(100, 1.0, 3, 0.5, 0.0) == 100


def test_window_estimator_keeps_the_last_n():
    est = SuccessEstimator("window", window=3)
    assert est.value is None
    est.update([1.0, -1.0])
    assert est.value == 0.0
    est.update([1.0, 1.0])  # window now -1, 1, 1
    assert est.value == pytest.approx(1 / 3)


def test_ema_estimator_by_hand():
    est = SuccessEstimator("ema", alpha=0.5)
    est.update([1.0])  # first value: 1
    est.update([-1.0])  # 0.5 * 1 + 0.5 * -1 = 0
    est.update([1.0])  # 0.5 * 0 + 0.5 * 1 = 0.5
    assert est.value == 0.5


def test_batch_estimator_is_the_papers_rule():
    est = SuccessEstimator("batch")
    est.update([1.0, 0.0, -1.0, 1.0])
    assert est.value == 0.25
    est.update([-1.0, -1.0])
    assert est.value == -1.0
    est.update([])  # a step with no finished trajectory keeps the last estimate
    assert est.value == -1.0


def test_estimator_state_round_trips():
    est = SuccessEstimator("window", window=4)
    est.update([1.0, 0.0, 1.0])
    again = SuccessEstimator.from_state(est.state())
    again.update([-1.0, -1.0])
    est.update([-1.0, -1.0])
    assert again.value == est.value == pytest.approx(-0.25)


def test_aborted_trajectories_are_excluded_or_count_as_failures():
    assert success_rewards([1.0, None, 0.0], "exclude") == [1.0, 0.0]
    assert success_rewards([1.0, None, 0.0], "failure") == [1.0, -1.0, 0.0]


def test_a_step_where_every_episode_aborted_leaves_the_level():
    from trustee_lite.config import CurriculumConfig
    from trustee_lite.train.curriculum import move_level

    cur = CurriculumConfig(step=3, estimator="batch")
    est = SuccessEstimator("batch")
    assert move_level(10, [-1.0, -1.0], est, cur) == (7, [-1.0, -1.0])  # a failing step moves down
    # every episode aborted: no reward, the estimator keeps -1.0, and the level must stay
    assert move_level(7, [None, None, None], est, cur) == (7, [])
    assert est.value == -1.0
    # with `aborted: failure` the aborted episodes are failures: the level moves down on them
    fail = CurriculumConfig(step=3, estimator="batch", aborted="failure")
    assert move_level(7, [None, None], SuccessEstimator("batch"), fail) == (4, [-1.0, -1.0])
