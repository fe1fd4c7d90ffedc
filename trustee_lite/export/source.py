"""What an export starts from: a training run (by id or name) or an adapter folder a run wrote,
and the run's policy section (base model, template, thinking, sampling, LoRA settings) from
the run record. Anything else is one line."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import orjson

from trustee_lite.config import PolicyConfig
from trustee_lite.errors import UserError
from trustee_lite.store import Store


@dataclass(frozen=True)
class ExportSource:
    run_id: int
    run_name: str
    policy: PolicyConfig  # the policy section the run trained with
    adapter: Path  # the PEFT adapter folder exported
    step: int | None  # the training step it is from (its state.json), when known
    out_dir: Path  # the run's output folder

    def record(self) -> dict:
        """What an export writes beside its files (trustee_lite.json): where it came from, the
        enable_thinking choice to pass to the template, the recipe's sampling."""
        return {"run_id": self.run_id, "run": self.run_name, "step": self.step, "base": self.policy.model,
                "adapter": str(self.adapter), "enable_thinking": self.policy.thinking,
                "sampling": {"temperature": self.policy.temperature, "top_p": self.policy.top_p}}


def find(target: str, db: str) -> ExportSource:
    """A run id, a run name (its newest training run) or an adapter folder, in the database."""
    with Store.existing(db, "train") as store:
        folder = Path(target)
        if (folder / "adapter_config.json").is_file():
            run = _run_of_adapter(store, folder.resolve())
            adapter = folder.resolve()
        else:
            if folder.exists():
                raise UserError(target, "not a PEFT adapter folder (no adapter_config.json)")
            run = _run(store, target)
            adapter = Path(run["out_dir"]) / "adapter"
            if not (adapter / "adapter_config.json").is_file():
                raise UserError(target, f"run {run['id']} has no exported adapter at {adapter} (it committed no step)")
    recipe = orjson.loads(run["recipe"])
    try:
        policy = PolicyConfig.model_validate(recipe["policy"], strict=False)
    except ValueError as err:
        raise UserError(f"run {run['id']}", f"its recipe's policy section no longer reads: {str(err).splitlines()[0]}") from None
    return ExportSource(run["id"], run["name"], policy, adapter, _step(adapter), Path(run["out_dir"]))


def _run(store: Store, target: str) -> dict:
    column, value = ("id", int(target)) if target.isdigit() else ("name", target)
    rows = list(store.db.query(f"SELECT * FROM runs WHERE kind = 'train' AND {column} = ? AND out_dir IS NOT NULL "
                               "ORDER BY id DESC LIMIT 1", [value]))
    if not rows:
        known = ", ".join(f"{r['id']} ({r['name']})" for r in store.db.query(
            "SELECT id, name FROM runs WHERE kind = 'train' ORDER BY id DESC LIMIT 5"))
        raise UserError(target, "no training run with this " + ("id" if column == "id" else "name") + " and no adapter "
                        "folder at this path" + (f" (training runs: {known})" if known else " (the database has no training run)"))
    return rows[0]


def _run_of_adapter(store: Store, adapter: Path) -> dict:
    """The run that wrote `adapter`: OUT/adapter or OUT/checkpoints/step-N."""
    for out_dir in (adapter.parent, adapter.parent.parent):
        rows = list(store.db.query("SELECT * FROM runs WHERE kind = 'train' AND out_dir = ? ORDER BY id DESC LIMIT 1",
                                   [str(out_dir)]))
        if rows:
            return rows[0]
    raise UserError(str(adapter), "no training run in the database wrote this adapter: export reads the base model, "
                                  "chat template and sampling from the run record (give --db)")


def _step(adapter: Path) -> int | None:
    try:
        return int(json.loads((adapter / "state.json").read_text(encoding="utf-8"))["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
