"""Where a training run stands: start fresh or resume the run in --out from its last committed
step. The database is the source of truth; a checkpoint counts only once its step is recorded."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, replace
from pathlib import Path

from trustee_lite.config import Recipe
from trustee_lite.errors import UserError
from trustee_lite.store import Store
from trustee_lite.train.curriculum import SuccessEstimator

KEEP_LATEST = 2  # resume checkpoints kept besides the every-K ones


@dataclass
class RunState:
    run_id: int | None  # None: a new run, its row not written yet (begin_run writes it)
    next_step: int  # the first step still to run
    level: int
    estimator: SuccessEstimator
    checkpoint: Path | None  # the last committed checkpoint, to load before training on
    discarded: int = 0  # trajectories of an unfinished step removed on resume


def recipe_hash(recipe: Recipe) -> str:
    """Identity of a recipe for resuming; train.steps may change (to extend a run)."""
    data = recipe.model_dump(mode="json")
    data["train"].pop("steps", None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_dir(out_dir: Path, step: int) -> Path:
    return out_dir / "checkpoints" / f"step-{step:06d}"


def plan_run(store: Store, recipe: Recipe, out_dir: Path, seed: int, fresh: bool) -> RunState:
    """What `train` will do: resume the latest training run writing to out_dir (refused in one
    line if it cannot be), or start a new one. Writes nothing: before any model loads."""
    cur = recipe.curriculum
    new_estimator = SuccessEstimator(cur.estimator, cur.window, cur.ema_alpha)
    run = None if fresh else store.latest_run("train", str(out_dir))
    if run is None:
        return RunState(None, 1, cur.initial_level, new_estimator, None)
    if run["recipe_hash"] != recipe_hash(recipe):
        raise UserError(recipe.source, f"differs from the recipe of the run being resumed in {out_dir} "
                        "(use --fresh to start over, or another --out)")
    if run["seed"] != seed:
        raise UserError("--seed", f"{seed} differs from the seed {run['seed']} of the run in {out_dir} (use --fresh)")
    last = store.last_step(run["id"])
    done = last["step"] if last else 0
    if last is None:
        return RunState(run["id"], 1, cur.initial_level, new_estimator, None)
    checkpoint = Path(last["checkpoint"])
    state_file = checkpoint / "state.json"
    if not state_file.is_file():
        raise UserError(str(checkpoint), f"checkpoint of step {done} is missing; cannot resume (use --fresh)")
    state = json.loads(state_file.read_text(encoding="utf-8"))
    return RunState(run["id"], done + 1, state["level"], SuccessEstimator.from_state(state["estimator"]), checkpoint)


def open_run(store: Store, recipe: Recipe, out_dir: Path, seed: int, fresh: bool) -> RunState:
    """plan_run, then begin_run at once (nothing to load between them)."""
    return begin_run(store, recipe, out_dir, seed, fresh, plan_run(store, recipe, out_dir, seed, fresh))


def begin_run(store: Store, recipe: Recipe, out_dir: Path, seed: int, fresh: bool, state: RunState) -> RunState:
    """Write the planned run, once the tool pool and the models are known good: a new run's row
    (after --fresh removes the folder's old checkpoints), or a resumed run back to `running`,
    the trajectories of its unfinished step removed."""
    if state.run_id is None:
        if fresh:
            for name in ("checkpoints", "adapter"):
                shutil.rmtree(out_dir / name, ignore_errors=True)
        run_id = store.start_run("train", recipe.name, seed, recipe.model_dump(mode="json"), str(out_dir),
                                 recipe_hash(recipe))
        return replace(state, run_id=run_id)
    discarded = store.discard_after(state.run_id, state.next_step - 1)
    store.set_run_status(state.run_id, "running")
    return replace(state, discarded=discarded)


def prune_checkpoints(out_dir: Path, every: int, final_step: int) -> None:
    """Keep every K-th step's checkpoint, the last few (for resume) and the final one."""
    folder = out_dir / "checkpoints"
    if not folder.is_dir():
        return
    steps = sorted(int(p.name.split("-")[1]) for p in folder.glob("step-*") if p.name[5:].isdigit())
    keep = set(steps[-KEEP_LATEST:]) | {s for s in steps if s % every == 0} | {final_step}
    for step in steps:
        if step not in keep:
            shutil.rmtree(checkpoint_dir(out_dir, step), ignore_errors=True)
    for tmp in folder.glob("*.tmp"):  # a write a kill interrupted
        shutil.rmtree(tmp, ignore_errors=True)


def export_adapter(checkpoint: Path, out_dir: Path) -> Path:
    """Copy a checkpoint's adapter (PEFT layout) and its state.json (the step it is from) to
    out_dir/adapter, atomically."""
    target = out_dir / "adapter"
    tmp = out_dir / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name in ("adapter_config.json", "adapter_model.safetensors", "state.json"):
        shutil.copy2(checkpoint / name, tmp / name)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    return target
