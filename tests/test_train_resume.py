"""Stop a real training run with Ctrl-C, then with SIGTERM during generation, then kill it
(SIGKILL) during the update, inside the database transaction that commits a step, and during a
checkpoint write; the same command then finishes it: every step recorded once, nothing counted
twice, the database sound."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

RECIPE = textwrap.dedent("""\
    name: resume
    seed: 0
    policy:
      model: embedded
      max_new_tokens: 24
      max_response_tokens: 48
      batch_size: 4
      lora: {rank: 4, alpha: 8}
    simulator:
      backend: llama_cpp
      model: embedded
      max_new_tokens: 96
      n_ctx: 4096
      retries: 1
      max_history_chars: 1000
    tools:
      max_result_chars: 128
    rollout:
      rollouts_per_task: 2
    train:
      steps: 3
      tasks_per_step: 1
      task_attempts: 2
      learning_rate: 1.0e-4
      micro_batch_size: 2
      checkpoint_every: 1
""")
STEPS, TASKS, ROLLOUTS = 3, 1, 2


def command(tmp: Path) -> list[str]:
    return [sys.executable, "-m", "trustee_lite", "-v", str(tmp / "resume.yaml"),
            "--db", str(tmp / "db.sqlite"), "--out", str(tmp / "out")]


def run_until_killed(tmp: Path, marker: str, how: signal.Signals = signal.SIGKILL) -> str:
    """Start the run, send `how` as soon as `marker` shows in its log; return the log."""
    proc = subprocess.Popen(command(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=tmp)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            proc.send_signal(how)
            break
    seen += proc.stderr.readlines()
    proc.wait(timeout=120)
    log = "".join(seen)
    assert marker in log, f"the run ended before {marker!r}:\n{log[-3000:]}"
    assert proc.returncode == (-9 if how == signal.SIGKILL else 130), log[-3000:]
    return log


def interrupt_once(tmp: Path, marker: str) -> tuple[int, str, str]:
    """Ctrl-C (SIGINT) once when `marker` shows: the run finishes that step, then stops."""
    proc = subprocess.Popen(command(tmp), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if marker in line:
            proc.send_signal(signal.SIGINT)
            break
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, "".join(seen) + err


def test_stopped_five_ways_then_finished(tmp_path):
    (tmp_path / "resume.yaml").write_text(RECIPE)
    code, out, err = interrupt_once(tmp_path, "step 1: rollouts")
    assert code == 130, err[-3000:]
    assert "stopping after this step's checkpoint" in err
    stopped = json.loads(out.strip().splitlines()[-1])
    assert stopped["status"] == "interrupted" and stopped["steps"] == 1  # step 1 finished and committed
    assert (tmp_path / "out" / "checkpoints" / "step-000001" / "adapter_model.safetensors").is_file()

    log = run_until_killed(tmp_path, "step 2: rollouts", signal.SIGTERM)  # during generation: stops at once
    assert "interrupted; everything finished so far is recorded" in log
    with sqlite3.connect(tmp_path / "db.sqlite") as con:
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
    log = run_until_killed(tmp_path, "step 2: update")  # during the update
    assert "resuming run 1 at step 2" in log
    wrapper = str(Path(__file__).parent / "die_in_commit.py")
    dying = subprocess.run([sys.executable, wrapper, "2", *command(tmp_path)[3:]], capture_output=True, text=True,
                           cwd=tmp_path, timeout=600)
    assert dying.returncode == 17 and "step 2: dying inside the commit" in dying.stderr, dying.stderr[-3000:]
    with sqlite3.connect(tmp_path / "db.sqlite") as con:  # the step's row went with its transaction
        assert con.execute("SELECT max(step) FROM steps").fetchone()[0] == 1
    run_until_killed(tmp_path, "step 3: checkpoint")  # during the checkpoint write

    done = subprocess.run(command(tmp_path), capture_output=True, text=True, cwd=tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["status"] == "done" and summary["steps"] == STEPS
    assert summary["episodes"] == STEPS * TASKS * ROLLOUTS

    con = sqlite3.connect(tmp_path / "db.sqlite")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM runs WHERE kind = 'train'").fetchone()[0] == 1
    assert con.execute("SELECT status FROM runs").fetchone()[0] == "done"
    assert [r[0] for r in con.execute("SELECT step FROM steps ORDER BY id")] == [1, 2, 3]
    per_step = con.execute("SELECT step, count(*) FROM trajectories GROUP BY step ORDER BY step").fetchall()
    assert per_step == [(s, TASKS * ROLLOUTS) for s in range(1, STEPS + 1)]
    levels = con.execute("SELECT level, next_level FROM steps ORDER BY step").fetchall()
    assert all(levels[i][1] == levels[i + 1][0] for i in range(len(levels) - 1))  # the curriculum carried over
    adapter = Path(summary["adapter"])
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in adapter.iterdir()}
    assert not list((tmp_path / "out" / "checkpoints").glob("*.tmp"))

    again = subprocess.run(command(tmp_path), capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"run 1 in {tmp_path / 'out'} is finished: 3 of 3 steps done" in again.stderr
    assert "--steps 4" in again.stderr and "loading" not in again.stderr  # no model loaded
    assert json.loads(again.stdout.strip().splitlines()[-1])["steps_this_process"] == 0


def test_a_second_ctrl_c_stops_inside_a_batch(tmp_path):
    """Policy turns that never end by themselves (tests/endless_turns.py) and 3,000 new tokens a
    turn: a batch of minutes on 2 cores. Ctrl-C twice inside it: the command exits within the
    timeout, long before the batch could end, the run recorded `interrupted`, no step counted."""
    (tmp_path / "resume.yaml").write_text(RECIPE)
    helper = str(Path(__file__).parent / "endless_turns.py")
    proc = subprocess.Popen([sys.executable, helper, *command(tmp_path)[3:], "--set", "policy.max_new_tokens=3000",
                             "--set", "policy.max_response_tokens=3000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if "step 1: rollouts" in line:
            break
    time.sleep(3)  # inside the first batch of policy turns
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    sent = time.monotonic()
    out, err = proc.communicate(timeout=30)
    print(f"exited {time.monotonic() - sent:.2f} s after the second Ctrl-C")
    log = "".join(seen) + err
    assert proc.returncode == 130, log[-3000:]
    assert "stopping after this step's checkpoint" in log and "step 1: update" not in log
    assert "interrupted; everything finished so far is recorded" in log
    with sqlite3.connect(tmp_path / "db.sqlite") as con:
        assert con.execute("SELECT status FROM runs").fetchone()[0] == "interrupted"
        assert con.execute("SELECT count(*) FROM steps").fetchone()[0] == 0
