"""`python tests/die_in_commit.py STEP ARGS...`: the trustee_lite command line, whose process dies
inside the database transaction that commits training step STEP: every write of the commit made
(the group advantages, the step's row), then the process exits before the commit, as a power
cut or an OOM kill would (exit status 17). A test helper, never in the package."""

from __future__ import annotations

import os
import sys
import time

from trustee_lite.__main__ import main
from trustee_lite.store import Store

STEP = int(sys.argv.pop(1))


def add_step_then_die(self, run_id, record, advantages=None):
    if record.step != STEP:
        return committed(self, run_id, record, advantages)
    with self.db.atomic():
        self.db.conn.executemany(
            "UPDATE trajectories SET advantage = ? WHERE run_id = ? AND task_index = ? AND rollout_index = ?",
            [(adv, run_id, task, rollout) for (task, rollout), adv in (advantages or {}).items()])
        self.db["steps"].insert({"run_id": run_id, **record.row(), "created": time.time()})
        print(f"step {STEP}: dying inside the commit", file=sys.stderr, flush=True)
        os._exit(17)


committed = Store.add_step
Store.add_step = add_step_then_die
sys.exit(main(sys.argv[1:]))
