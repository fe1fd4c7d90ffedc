"""Which task a slot plays when the recipe has a tasks file: the held-out split, and the draws of
the three modes. Pure functions of the run seed, the slot and the level, so a run and its
resume draw the same tasks.

- replace: every slot a file task, in a seeded order of the tasks allowed at the level, cycling
  (a new order each pass);
- mix: a seeded coin per slot with probability `from_file` picks a file task (as replace would
  for that slot), otherwise the generator writes one;
- examples: every task generated, the generator shown `k` file tasks as examples of real
  requests: those sharing the most tools with the slot's draw, ties broken by the seed.

A task with a `level` is allowed only at that level or above; when none is allowed, replace
plays the lowest-level ones and mix generates.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from trustee_lite.env.pool.tools import ToolPool
from trustee_lite.env.task_file import FileTask, read_tasks, resolve
from trustee_lite.seeds import derive_seed


@dataclass(frozen=True)
class TaskSet:
    """The recipe's tasks file, resolved against the pool and split."""

    file: str  # its name, for records and tables
    mode: str  # replace, mix or examples
    train: tuple[FileTask, ...]
    held_out: tuple[FileTask, ...]
    from_file: float = 1.0  # mix: the share of slots from the file
    examples: int = 3  # examples: file tasks shown to the generator per draft

    def pick(self, index: int, level: int, seed: int) -> FileTask | None:
        """The file task slot `index` plays at `level`, or None when the generator writes it."""
        if self.mode == "examples" or not self.train:
            return None
        allowed = allowed_at(self.train, level)
        if self.mode == "mix":
            coin = random.Random(derive_seed(seed, "task-file", "coin", index)).random()
            if coin >= self.from_file or not allowed:
                return None
        return in_order(allowed or lowest(self.train), index, seed)

    def shown(self, tool_names: tuple[str, ...], index: int, seed: int) -> list[FileTask]:
        """examples mode: the file tasks shown to the generator for this slot's tools."""
        if self.mode != "examples":
            return []
        return matching(self.train, tool_names, self.examples, random.Random(derive_seed(seed, "task-file", "shown", index)))


def read(cfg) -> list[FileTask]:
    """A recipe's tasks file (config.TasksConfig), read and checked; tools are required except in
    examples mode."""
    return read_tasks(cfg.file, need_tools=cfg.mode != "examples")


def task_set(cfg, rows: list[FileTask], pool: ToolPool, seed: int) -> TaskSet:
    """A recipe's tasks section (config.TasksConfig) over its file's rows: tool names resolved in
    the pool, split into training and held-out tasks by the recipe's seed (the same split
    whatever seed a command runs with)."""
    train, held_out = split(resolve(rows, pool), cfg.holdout, seed)
    return TaskSet(Path(cfg.file).name, cfg.mode, train, held_out, cfg.from_file, cfg.examples)


def split(tasks: list[FileTask], holdout: float, seed: int) -> tuple[tuple[FileTask, ...], tuple[FileTask, ...]]:
    """(training, held-out): round(holdout x n) tasks held out, chosen by the seed; both in file
    order. At least one task stays for training."""
    count = min(len(tasks) - 1, round(holdout * len(tasks))) if holdout > 0 else 0
    chosen = set(random.Random(derive_seed(seed, "task-file", "holdout")).sample(range(len(tasks)), count))
    return (tuple(t for i, t in enumerate(tasks) if i not in chosen),
            tuple(t for i, t in enumerate(tasks) if i in chosen))


def allowed_at(tasks: tuple[FileTask, ...], level: int) -> tuple[FileTask, ...]:
    return tuple(t for t in tasks if t.level is None or t.level <= level)


def lowest(tasks: tuple[FileTask, ...]) -> tuple[FileTask, ...]:
    """The tasks of the lowest level any has."""
    bottom = min(t.level or 1 for t in tasks)
    return tuple(t for t in tasks if (t.level or 1) == bottom)


def in_order(tasks: tuple[FileTask, ...], index: int, seed: int) -> FileTask:
    """Slot `index` of a seeded order of `tasks` that starts again, reshuffled, after each pass."""
    size = len(tasks)
    order = list(range(size))
    random.Random(derive_seed(seed, "task-file", "order", index // size, size)).shuffle(order)
    return tasks[order[index % size]]


def matching(tasks: tuple[FileTask, ...], tool_names: tuple[str, ...], k: int, rng: random.Random) -> list[FileTask]:
    """Up to k tasks, those sharing the most of `tool_names` first (ties in the rng's order)."""
    keys = {id(t): (-len(set(t.tools) & set(tool_names)), rng.random()) for t in tasks}
    return sorted(tasks, key=lambda t: keys[id(t)])[:k]
