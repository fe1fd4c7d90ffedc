"""Curriculum: the level controller (moves by the success signal) and the rolling success-rate
estimator it reads. The knobs a level gives are the environment's (env/knobs.py)."""

from __future__ import annotations

from trustee_lite.config import ESTIMATORS, CurriculumConfig
from trustee_lite.env.knobs import MAX_LEVEL, MIN_LEVEL
from trustee_lite.metrics import mean


def next_level(level: int, signal: float | None, step: int, up: float, down: float) -> int:
    """Move the level by `step`: up when the success signal >= up, down when <= down; clamp to
    [1, 100]. No signal (no finished trajectory yet) leaves the level where it is."""
    if signal is not None:
        if signal >= up:
            level += step
        elif signal <= down:
            level -= step
    return max(MIN_LEVEL, min(MAX_LEVEL, level))


class SuccessEstimator:
    """Rolling estimate of the success signal (mean final reward in [-1, 1]) over recent
    finished trajectories: the last `window` of them, an EMA, or the last batch only (the
    paper's rule). Its state is a small dict, saved with every checkpoint."""

    def __init__(self, kind: str = "window", window: int = 128, alpha: float = 0.05):
        if kind not in ESTIMATORS:
            raise ValueError(f"unknown estimator {kind!r}")
        self.kind, self.window, self.alpha = kind, window, alpha
        self.recent: list[float] = []  # window: the last `window` rewards; batch: the last batch
        self.ema: float | None = None

    def update(self, rewards: list[float]) -> None:
        """Add one step's finished trajectories' rewards, in a fixed order."""
        if self.kind == "batch":
            self.recent = list(rewards) or self.recent
        elif self.kind == "window":
            self.recent = (self.recent + list(rewards))[-self.window:]
        else:
            for r in rewards:
                self.ema = r if self.ema is None else (1 - self.alpha) * self.ema + self.alpha * r

    @property
    def value(self) -> float | None:
        if self.kind == "ema":
            return self.ema
        return mean(self.recent)

    def state(self) -> dict:
        return {"kind": self.kind, "window": self.window, "alpha": self.alpha, "recent": self.recent, "ema": self.ema}

    @classmethod
    def from_state(cls, state: dict) -> SuccessEstimator:
        est = cls(state["kind"], state["window"], state["alpha"])
        est.recent, est.ema = list(state["recent"]), state["ema"]
        return est


def move_level(level: int, rewards: list[float | None], estimator: SuccessEstimator, cur: CurriculumConfig
               ) -> tuple[int, list[float]]:
    """After a training step: the estimator takes the step's success rewards and the level moves
    on its value; returns the new level and the rewards it took. A step that gave no reward
    (every episode aborted, with `aborted: exclude`) leaves the level where it is, whatever the
    estimator still holds; with `aborted: failure` aborted episodes count as -1 and such a
    step moves the level down like any failing one."""
    signal = success_rewards(rewards, cur.aborted)
    estimator.update(signal)
    if not signal:
        return level, signal
    return next_level(level, estimator.value, cur.step, cur.up_threshold, cur.down_threshold), signal


def success_rewards(rewards: list[float | None], aborted: str) -> list[float]:
    """The rewards the estimator sees: aborted trajectories (None) are left out, or count as
    failures (-1) when `aborted` is 'failure'."""
    if aborted == "failure":
        return [-1.0 if r is None else r for r in rewards]
    return [r for r in rewards if r is not None]
