"""`report`, trackers and the run's ETA, on one real record: a 2-step training run of the embedded
policy (a scripted simulator, TensorBoard on), a BFCL `eval` run of the same policy, and one
episode whose policy text tries to break out of the page. The page is loaded in headless
Chromium; under CI (TRUSTEE_LITE_REQUIRE_BROWSER=1) a missing browser fails the test."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest
from scripted import ScriptedBackend, role_of

from trustee_lite.__main__ import main
from trustee_lite.config import parse_recipe
from trustee_lite.env.chat import PolicyChat
from trustee_lite.env.episode import Policy
from trustee_lite.env.pool.tools import load_pool
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.lm import GenerationService
from trustee_lite.lm.prefix_cache import PrefixCache
from trustee_lite.progress import duration, run_eta
from trustee_lite.records import KnobValues, TaskDraft, ToolCall, Trajectory, Turn
from trustee_lite.report.data import differences, sample_steps
from trustee_lite.runtime import Runtime, recorded_run
from trustee_lite.store import Store
from trustee_lite.train.checkpoints import open_run
from trustee_lite.train.loop import run_training

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "smoke.yaml")
CHROMIUM = os.environ.get("TRUSTEE_LITE_CHROMIUM", "/usr/bin/chromium")
STEPS = 2
WEATHER = {"type": "function", "function": {
    "name": "weather", "description": "Current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
QUERY = 'Reply with exactly this: <tool_call>{"name": "weather", "arguments": {"city": "Paris"}}</tool_call>'
SIMULATOR = {
    "task_generator": {"user_intent": "Know the weather in Paris.", "expected_tool_calls": ["weather"],
                       "user_persona": "A traveller.", "first_user_query": QUERY},
    "user_simulator": {"response": "Thanks.", "reward": 1},
    "tool_simulator": {"result": '{"temp_c": 18}', "reward": 1},
}
BREAKOUT = '</script><script>window.injected = 1</script><img src=x onerror="window.injected = 2"><u id="forged">forged?</u>'


def simulator(request) -> str:
    role = role_of(request)
    if role == "verifier":  # a verdict that varies with the conversation, so groups have unequal rewards
        reward = int(hashlib.sha256(request.messages[-1]["content"].encode()).hexdigest(), 16) % 3 - 1
        return json.dumps({"reasoning": f"judged: {reward}", "reward": reward})
    return json.dumps(SIMULATOR[role])


@pytest.fixture(scope="module")
def record(smol_backend, tmp_path_factory):
    """The database (train, eval and a hostile episode), the training output folder, its stderr."""
    root = tmp_path_factory.mktemp("report")
    tools = root / "tools.json"
    tools.write_text(json.dumps([WEATHER]))
    recipe = parse_recipe({
        "name": "report-test", "seed": 3,
        "policy": {"model": "embedded", "max_new_tokens": 24, "max_response_tokens": 24, "temperature": 1.0,
                   "batch_size": 8, "lora": {"rank": 4, "alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        "simulator": {"backend": "transformers", "model": "scripted", "retries": 0},
        "tools": {"file": str(tools)},
        "rollout": {"rollouts_per_task": 4},
        "curriculum": {"initial_level": 1, "soft_eps": 0.0, "step": 0,
                       "knobs": {"max_assistant_turns": {"scale": 0.0, "min": 1, "max": 1}}},
        "train": {"steps": STEPS, "tasks_per_step": 1, "learning_rate": 1e-3, "kl_coef": 0.0, "micro_batch_size": 4,
                  "report_to": ["tensorboard"]},
    })
    backend = copy.copy(smol_backend)
    backend.model = copy.deepcopy(smol_backend.model)
    backend.prefix_cache = PrefixCache(2**30)  # its own kept turns: they belong to this copy's weights
    db, out = root / "db.sqlite", root / "out"

    async def train():
        async with GenerationService(backend, 8) as policy_service, \
                GenerationService(ScriptedBackend(simulator)) as sim_service:
            with Store(db) as store:
                env = Runtime(recipe, store, load_pool(str(tools)),
                              Policy(policy_service, PolicyChat(backend.tokenizer), 1.0, 1.0),
                              SimulatorClient(sim_service, store, recipe.simulator), policy_service, sim_service)
                state = open_run(store, recipe, out, recipe.seed, fresh=False)
                with recorded_run(store, "train", recipe, recipe.seed, run_id=state.run_id) as run:
                    return await run_training(env, run, state, out, recipe.seed, STEPS, time.perf_counter())

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        summary = asyncio.run(train())
    assert summary["steps"] == STEPS
    status = main(["eval", SMOKE, "--bfcl", "simple_python", "--limit", "2", "--max-new-tokens", "16", "--db", str(db)])
    assert status == 0
    _hostile_episode(db)
    _calibration_result(db)
    return db, out, stderr.getvalue()


def _hostile_episode(db: Path) -> None:
    """A simulate run whose policy wrote markup and script: the page must show it as text."""
    knobs = KnobValues(1, 1, 0, 0, 0, 1, 0, 1, 1, 1)
    with Store(db) as store:
        run_id = store.start_run("simulate", "hostile", 0, {"name": "hostile"})
        draft = TaskDraft(0, 1, "weather", knobs, ("weather",))
        task_id = store.add_draft(run_id, draft)
        turns = (Turn("assistant", BREAKOUT, calls=(ToolCall("weather", {"city": BREAKOUT}),)),)
        store.add_trajectory(run_id, task_id, Trajectory(0, 0, turns, "max_assistant_turns", -1.0, BREAKOUT,
                                                         token_ids=(1, 2, 3), policy_mask=(0, 1, 1), logprobs=(0, 0, 0)))
        store.finish_run(run_id, "done", {})


def _calibration_result(db: Path) -> None:
    """Two case kinds of a simulator's calibration, as `calibrate` stores them (a real run takes
    minutes; its own tests are in test_calibration.py)."""
    with Store(db) as store:
        run_id = store.start_run("calibrate", "smoke", 0, {"name": "smoke"})
        for kind, score in (("positive", 0.5), ("skipped_call", 0.75)):
            store.add_eval_result(run_id, {"adapter": None, "adapter_step": None, "benchmark": "calibration",
                                           "category": kind, "count": 4, "score": score, "errors": {},
                                           "figures": {"simulator": "llama_cpp embedded"}})
        store.finish_run(run_id, "done", {})


def test_report_writes_one_small_page(record, tmp_path, capsys):
    db, _, _ = record
    out, figures = tmp_path / "report.html", tmp_path / "figures"
    assert main(["report", "--db", str(db), "--out", str(out), "--figures", str(figures)]) == 0
    result = json.loads(capsys.readouterr().out)
    page = out.read_text()
    assert result["bytes"] == len(page.encode()) < 1_000_000
    assert page.count("<svg") >= 6 and "Evaluation: BFCL accuracy" in page
    assert "<script>window.injected" not in page and "<img src=x" not in page  # the policy's markup stays data
    assert {p.name for p in figures.iterdir()} == {f"{name}.svg" for name in (
        "valid_calls", "reward", "learning_signal", "success", "level", "tokens", "time_split", "loss", "evaluation",
        "calibration", "episodes_rewards", "episodes_ends", "episodes_turns", "episodes_tokens")}
    # the plots with nothing to draw are named, each with why (no run here had a GPU or an aborted episode)
    for name, why in (("gpu_busy", "without an NVIDIA GPU"), ("gpu_memory", "without an NVIDIA GPU"),
                      ("aborts", "no episode aborted")):
        assert re.search(f'<li id="plot-{name}"><b>[^<]+</b>: [^<]*{why}', page), name


def test_rollouts_are_trained_only_where_the_update_used_them(record):
    from trustee_lite.report import data

    db, _, _ = record
    with Store(db) as store:
        run = data.runs(store, [1])[0]
        rollouts = [r for t in data.episodes(store, run, None) for r in t["rollouts"]]
        assert len(rollouts) == STEPS * 4 and all(r["training"] for r in rollouts)
        # kl_coef 0: a rollout's tokens are trained when its advantage is not 0
        assert [r["trained"] for r in rollouts] == [r["advantage"] not in (None, 0) for r in rollouts]
        assert any(r["trained"] for r in rollouts)
        run.figures["loss"] = [None] * STEPS  # as if no step had made an update
        assert not any(r["trained"] for t in data.episodes(store, run, None) for r in t["rollouts"])


def test_a_database_of_simulate_runs_gets_plots_too(tmp_path, capsys):
    db = tmp_path / "db.sqlite"
    _hostile_episode(db)
    assert main(["report", "--db", str(db), "--out", str(tmp_path / "r.html"), "--figures", str(tmp_path / "f")]) == 0
    assert {p.name for p in (tmp_path / "f").iterdir()} == {
        f"episodes_{name}.svg" for name in ("rewards", "ends", "turns", "tokens")}
    page = (tmp_path / "r.html").read_text()
    assert '<li id="plot-reward"><b>Mean reward (verifier, finished episodes)</b>: no committed training step' in page
    assert "max_assistant_turns" in (tmp_path / "f" / "episodes_ends.svg").read_text()


@pytest.mark.parametrize("args, expected", [
    (["--db", "/nonexistent/db.sqlite"], "/nonexistent/db.sqlite: no such database"),
    (["--run", "99"], "--run: no run 99 in"),
    (["--trajectories", "-1"], "--trajectories: must be >= 0, got -1"),
])
def test_report_user_errors_are_one_line_exit_2(record, args, expected, capsys):
    db, _, _ = record
    assert main(["report", "--db", str(db), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith(expected) and err.count("\n") == 1


def test_page_in_headless_chromium(record, tmp_path):
    """The page loads without console errors; the plots show; choosing a step and a task shows its
    rollouts side by side; the hostile episode's markup shows as text and runs nothing."""
    required = bool(os.environ.get("TRUSTEE_LITE_REQUIRE_BROWSER"))
    if shutil.which(CHROMIUM) is None:
        (pytest.fail if required else pytest.skip)(f"no Chromium at {CHROMIUM} (Debian: apt-get install chromium)")
    sync_api = importlib.import_module("playwright.sync_api") if required else pytest.importorskip("playwright.sync_api")
    db, _, _ = record
    out = tmp_path / "report.html"
    assert main(["report", "--db", str(db), "--out", str(out)]) == 0
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(out.as_uri())
        plots = page.locator(".plot svg")
        assert plots.count() >= 6 and plots.first.is_visible()
        options = page.locator("#group option").all_text_contents()
        assert options[:STEPS] == [f"run 1 report-test, step {s}" for s in range(1, STEPS + 1)]
        page.select_option("#group", index=STEPS - 1)
        rollouts = page.locator(".rollout")
        assert rollouts.count() == 4 and rollouts.first.is_visible()
        first = rollouts.first.inner_text()
        assert "advantage" in first and "verifier:" in first and "judged:" in first and "Reply with exactly" in first
        assert page.locator(".rollout .policy-text").count() == 4
        # at 1,280 px every rollout column is whole on the page: none cut off, no sideways scrolling
        width = page.evaluate("document.documentElement.clientWidth")
        for box in (rollouts.nth(i).bounding_box() for i in range(4)):
            assert box["x"] >= 0 and box["x"] + box["width"] <= width, (box, width)
        assert page.evaluate("document.documentElement.scrollWidth") <= width
        badges = page.locator(".rollout .who .badge").all_text_contents()
        assert any(b.endswith(" tokens trained") for b in badges), badges  # this step made an update
        page.screenshot(path=str(tmp_path / "step.png"), full_page=True)
        page.select_option("#group", label="run 3 simulate hostile")
        assert BREAKOUT in page.locator(".rollout .policy-text").first.inner_text()
        assert page.evaluate("window.injected") is None and page.locator("#forged").count() == 0
        browser.close()
    assert errors == []


def test_tensorboard_events_hold_each_committed_step(record):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    db, out, _ = record
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    with Store(db) as store:
        steps = list(store.db.query("SELECT step, mean_reward, wall_s, level FROM steps WHERE run_id = 1 ORDER BY step"))
    for tag, column in (("reward/mean", "mean_reward"), ("time/wall_s", "wall_s"), ("curriculum/level", "level")):
        logged = events.Scalars(tag)
        assert [e.step for e in logged] == [s["step"] for s in steps]
        assert [e.value for e in logged] == pytest.approx([s[column] for s in steps], rel=1e-6)


def test_progress_shows_the_run_eta(record):
    _, _, stderr = record
    summaries = [line for line in stderr.splitlines() if line.startswith("step 1/2: level")]
    assert len(summaries) == 1 and " | run ETA " in summaries[0]
    seconds = float(summaries[0].split(" | ")[1].split("s")[0])  # "| 12.3s (policy ..." : the step's wall time
    # one more step of the same length (the line shows the wall time to 0.1 s)
    assert any(summaries[0].endswith(f"run ETA {duration(seconds + d)}") for d in (-0.05, 0.0, 0.05))
    assert "run ETA" in stderr.split("step 2/2", 1)[1]  # beside the second step's bar


def test_the_step_line_and_row_split_the_time(record):
    db, _, stderr = record
    line = next(line for line in stderr.splitlines() if line.startswith("step 1/2: level"))
    found = re.search(r"\| ([\d.]+)s \(policy ([\d.]+) \[prefill ([\d.]+) decode ([\d.]+)\] sim ([\d.]+) "
                      r"update ([\d.]+) checkpoint ([\d.]+) waiting ([\d.]+)\)", line)
    assert found, line
    with Store(db) as store:
        row = next(store.db.query("SELECT * FROM steps WHERE run_id = 1 AND step = 1"))
    names = ("wall_s", "policy_gen_s", "policy_prefill_s", "policy_decode_s", "simulation_s", "update_s",
             "checkpoint_s", "other_s")
    assert [float(v) for v in found.groups()] == [round(row[n], 1) for n in names]
    assert row["policy_prefill_s"] > 0 and row["policy_decode_s"] > 0 and row["checkpoint_s"] > 0
    assert row["policy_prefill_s"] + row["policy_decode_s"] <= row["policy_gen_s"] + 0.02
    assert row["training_s"] == pytest.approx(row["update_s"] + row["checkpoint_s"], abs=0.011)
    assert row["prefill_tokens"] > 0 and row["reused_tokens"] >= 0


def test_eta_arithmetic():
    assert run_eta([10.0, 30.0, 20.0], 2, 5.0, 0, 0) == 15.0 + 2 * 20.0  # median 20: rest of this step + 2 more
    assert run_eta([10.0, 30.0], 1, 0.0, 3, 8) == 40.0  # even count: median 20
    assert run_eta([], 3, 10.0, 2, 8) == 30.0 + 3 * 40.0  # no finished step: this step's pace (40 s a step)
    assert run_eta([], 3, 10.0, 0, 8) is None
    assert run_eta([50.0], 0, 80.0, 4, 8) == 80.0  # a step running late: its rest at its own pace (4 of 8 in 80 s)
    assert run_eta([50.0], 0, 80.0, 0, 8) == 1.0  # ... never 0 while it runs, even before an episode is done
    assert [duration(s) for s in (4.4, 185, 3720)] == ["4s", "3m05s", "1h02m"]


def test_sampled_steps_and_run_labels():
    assert sample_steps(list(range(1, 11)), 3) == [1, 5, 10]
    assert sample_steps([1, 2, 3], 5) == [1, 2, 3] and sample_steps([1, 2, 3], 0) == [1, 2, 3]
    assert sample_steps([4, 5, 6], 1) == [6]
    recipes = [{"seed": 0, "train": {"learning_rate": 1e-3}, "source": "a.yaml"},
               {"seed": 1, "train": {"learning_rate": 0}, "source": "b.yaml"}]
    assert differences(recipes) == [{"seed": "0", "train.learning_rate": "0.001"}, {"seed": "1", "train.learning_rate": "0"}]


def test_valid_call_rate_and_learning_signal_by_hand(tmp_path):
    """Step 1: a group of two -1s without calls, and a group [1, -1] of a well-formed and a
    malformed call; step 2: one group [0, 0] of well-formed calls, plus an aborted episode that
    counts nowhere. Valid-call rates 1/4 and 2/2; groups with unequal rewards 1/2 and 0/1."""
    from trustee_lite.report.data import signal_shares, valid_call_rates

    good, bad = ToolCall("weather", {"city": "Paris"}), ToolCall(None, {}, "{oops", error="not JSON")
    knobs = KnobValues(1, 1, 0, 0, 0, 1, 0, 1, 1, 1)
    episodes = {1: {0: [(-1.0, None), (-1.0, None)], 1: [(1.0, good), (-1.0, bad)]},
                2: {2: [(0.0, good), (0.0, good), (None, good)]}}
    with Store(tmp_path / "db.sqlite") as store:
        run_id = store.start_run("train", "hand", 0, {})
        for step, tasks in episodes.items():
            for task, rollouts in tasks.items():
                task_id = store.add_draft(run_id, TaskDraft(task, 1, "weather", knobs, ("weather",)), step)
                for i, (reward, call) in enumerate(rollouts):
                    turns = (Turn("assistant", "text", calls=(call,) if call else ()),)
                    store.add_trajectory(run_id, task_id, Trajectory(
                        task, i, turns, "aborted" if reward is None else "max_assistant_turns", reward,
                        abort_reason="simulator_error" if reward is None else None), step)
        assert valid_call_rates(store, run_id) == {1: 0.25, 2: 1.0}
        assert signal_shares(store, run_id) == {1: 0.5, 2: 0.0}
