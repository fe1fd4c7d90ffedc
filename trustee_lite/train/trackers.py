"""Experiment trackers (`train.report_to`): each committed step's figures go to TensorBoard (its
standard SummaryWriter, under OUT/tensorboard) and/or Weights & Biases (`WANDB_MODE=offline`
works without a network). Both are optional packages, imported only when a recipe asks for them
and checked before any model loads."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trustee_lite.errors import UserError

PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb"}


def check_installed(report_to: list[str], place: str) -> None:
    """A tracker whose package is missing is the user's error, said before anything loads."""
    import importlib.util

    for name in report_to:
        if importlib.util.find_spec(PACKAGES[name]) is None:
            raise UserError(f"{place}: train.report_to", f"{name} is not installed: pip install {PACKAGES[name]}")


def scalars(row: dict[str, Any]) -> dict[str, float]:
    """A step row's numbers by tracker tag (`reward/mean`, `time/training_s`, ...); None and text
    left out; the abort reasons as counts of their own."""
    groups = {"mean_reward": "reward/mean", "std_reward": "reward/std", "mean_tool_reward": "reward/tool",
              "mean_user_reward": "reward/user", "success_rate": "success/rate", "signal": "curriculum/signal", "signal_rolling": "curriculum/signal_rolling",
              "level": "curriculum/level", "next_level": "curriculum/next_level", "episodes": "episodes/total",
              "aborted": "episodes/aborted", "tasks": "episodes/tasks"}
    out: dict[str, float] = {}
    for key, value in row.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or key == "step":
            continue
        if key in groups:
            tag = groups[key]
        elif key.endswith("_s"):
            tag = f"time/{key}"
        elif key.endswith("tokens") or key.startswith("cache_"):
            tag = f"simulator/{key}" if key != "policy_tokens" else "policy/tokens"
        else:
            tag = f"train/{key}"
        out[tag] = float(value)
    for reason, count in json.loads(row.get("abort_reasons") or "{}").items():
        out[f"episodes/aborted_{reason}"] = float(count)
    return out


class Trackers:
    """The recipe's trackers for one run; `log` after each committed step, `close` at the end."""

    def __init__(self, report_to: list[str], out_dir: Path, run_id: int, run_name: str, config: dict):
        self.writers: list[Any] = []
        self.wandb = None
        if "tensorboard" in report_to:
            from torch.utils.tensorboard import SummaryWriter

            self.writers.append(SummaryWriter(log_dir=str(out_dir / "tensorboard")))
        if "wandb" in report_to:
            import wandb

            # a resumed run continues its W&B run: the id is the run record's id and output folder
            folder = hashlib.sha1(str(out_dir).encode()).hexdigest()[:8]
            self.wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "trustee_lite"), name=f"{run_name}-{run_id}",
                                    id=f"{run_name}-{run_id}-{folder}", resume="allow", config=config, dir=str(out_dir))

    def log(self, step: int, row: dict[str, Any]) -> None:
        values = scalars(row)
        for writer in self.writers:
            for tag, value in values.items():
                writer.add_scalar(tag, value, global_step=step)
            writer.flush()
        if self.wandb is not None:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.wandb is not None:
            self.wandb.finish()
