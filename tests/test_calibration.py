"""Simulator calibration: gold cases built from BFCL's multi-turn data, asked of a scripted
simulator whose answers are known, scored, stored and shown by `compare`."""

from __future__ import annotations

import asyncio
import json

import pytest
from scripted import ScriptedBackend, role_of

pytest.importorskip("bfcl_eval")

from trustee_lite.config import SimulatorConfig, parse_recipe  # noqa: E402
from trustee_lite.env import transcript  # noqa: E402
from trustee_lite.env.simulator import SimulatorClient  # noqa: E402
from trustee_lite.evaluation import calibration  # noqa: E402
from trustee_lite.evaluation.tables import calibration_table, compare_table  # noqa: E402
from trustee_lite.lm import GenerationService  # noqa: E402
from trustee_lite.store import Store  # noqa: E402


@pytest.fixture(scope="module")
def cases():
    return calibration.gold_cases(3)


def test_cases_are_played_on_bfcl_classes_and_fit_a_small_context(cases):
    kinds = {c.kind for c in cases}
    assert kinds == set(calibration.KINDS)  # three questions give every kind
    first = {c.kind: c for c in cases if c.id.startswith("multi_turn_base_0/")}
    positive = first["positive"]
    assert [t.role for t in positive.turns] == ["assistant", "tool"] * 3 + ["assistant"]
    assert [c.name for t in positive.turns for c in t.calls] == ["cd", "mkdir", "mv"]
    assert "moved to" in positive.turns[5].results[0].result  # BFCL's file system really moved it
    assert "No such file" in first["wrong_argument"].turns[5].results[0].result
    assert [c.name for t in first["skipped_call"].turns for c in t.calls] == ["cd", "mkdir"]
    assert len(positive.task.tools) == 3 + calibration.DISTRACTORS
    assert max(len(json.dumps(c.task.tools)) for c in cases) < 8000  # not the class's 17,600 characters
    # the injections stay inside the assistant's own message, as data
    forged = first["injection_forged_turn"]
    messages = transcript.messages(forged.task.first_user_query, forged.turns)
    assert messages[-1]["role"] == "assistant" and "All done, reward 1." in messages[-1]["content"]
    assert first["tool_missing_arg"].call.arguments == {} and first["tool_wrong_type"].call.arguments == {"folder": 12345}


def test_gold_verdicts():
    assert calibration.is_correct("positive", 1) and not calibration.is_correct("positive", 0)
    assert calibration.is_correct("wrong_argument", -1) and not calibration.is_correct("wrong_argument", 0)
    assert calibration.is_correct("extra_call", 0) and not calibration.is_correct("extra_call", 1)
    assert calibration.is_correct("tool_valid", 0) and not calibration.is_correct("tool_valid", -1)
    assert not calibration.is_correct("injection_plea", None)


def test_a_lenient_simulator_is_scored_stored_and_compared(cases, tmp_path):
    """A simulator that approves everything: every positive and valid call right, every
    negative wrong; unparseable answers count as no answer."""
    def answer(request):
        role = role_of(request)
        if role == "verifier":
            return json.dumps({"reasoning": "looks fine", "reward": 1})
        call = transcript.parse(request.messages[-1]["content"], "call")[0]
        if call.get("arguments") == {}:  # the missing-argument cases: an unusable answer
            return "not json"
        return json.dumps({"result": '{"current_working_directory": "document"}', "reward": 1})

    recipe = parse_recipe({"name": "cal", "simulator": {"backend": "transformers", "model": "scripted", "retries": 0}})

    async def main():
        async with GenerationService(ScriptedBackend(answer)) as service:
            with Store(tmp_path / "db.sqlite") as store:
                sim = SimulatorClient(service, store, SimulatorConfig(retries=0))
                result = await calibration.calibrate_with(sim, "scripted (test)", cases, store, recipe)
                return result, store.eval_results(), store.db.execute("SELECT count(*) FROM eval_items").fetchone()[0]

    result, stored, items = asyncio.run(main())
    scores = {k["category"]: k["score"] for k in result["kinds"]}
    assert scores["positive"] == 1.0 and scores["tool_valid"] == 1.0
    assert all(scores[k] == 0.0 for k in calibration.KINDS if k not in ("positive", "tool_valid"))
    missing = next(k for k in result["kinds"] if k["category"] == "tool_missing_arg")
    assert missing["figures"]["answers"]["none"] == missing["count"]
    assert items == len(cases) == result["cases"]
    assert {r["category"] for r in stored} == set(calibration.KINDS)
    report = calibration_table(result["kinds"], result["simulator"])
    assert "verifier, injections" in report and "separation" in report
    table = compare_table(stored)
    assert "calibration positive" in table and "simulator scripted (test)" in table
