"""Evaluation tables and their storage, on hand-made results."""

from __future__ import annotations

import json

from trustee_lite.evaluation.bfcl import Outcome
from trustee_lite.evaluation.evaluate import adapter_step
from trustee_lite.evaluation.tables import compare_table, variant_table
from trustee_lite.store import Store

BASE = {"adapter": None, "adapter_step": None, "benchmark": "bfcl", "category": "simple_python", "count": 20,
        "score": 0.15, "errors": {"parse_failure": 12, "wrong_arguments": 4, "wrong_function": 1}}
SIM = {"adapter": None, "adapter_step": None, "benchmark": "simulated", "category": "level 3", "count": 8,
       "score": -0.25, "errors": {"simulator_invalid_output": 1}}


def test_variant_table_counts_errors_by_kind():
    table = variant_table("base", [BASE, {**BASE, "category": "irrelevance", "score": 0.5, "count": 4,
                                          "errors": {"irrelevance_miss": 1, "policy_error": 1}}, SIM])
    lines = table.splitlines()
    assert lines[0] == "== base"
    assert lines[1].split() == ["bfcl", "category", "accuracy", "count", "parse", "wrong", "fn", "wrong", "args", "irrel.", "miss", "wrong", "outcome", "other"]
    assert lines[2].split() == ["simple_python", "0.150", "20", "12", "1", "4", "0", "0", "0"]
    assert lines[3].split() == ["irrelevance", "0.500", "4", "0", "0", "0", "1", "0", "1"]
    assert lines[4] == ("simulated held-out tasks, level 3: mean verifier reward -0.250 over 8 tasks, "
                        "abort rate 0.125 (simulator_invalid_output 1)")


def test_compare_puts_variants_side_by_side_newest_wins():
    adapter = {**BASE, "adapter": "/x/runs/smoke/adapter", "adapter_step": 3, "score": 0.3}
    stale = {**BASE, "score": 0.0}
    lines = compare_table([stale, BASE, adapter, SIM, {**SIM, "adapter": adapter["adapter"], "adapter_step": 3, "score": 0.5}]).splitlines()
    assert lines[0].split() == ["category", "base", "smoke/adapter", "@3"]
    assert lines[1].split() == ["simple_python", "0.150", "(20)", "0.300", "(20)"]
    assert lines[2].split() == ["simulated", "level", "3", "(reward)", "-0.250", "(8)", "0.500", "(8)"]


def test_eval_results_round_trip(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        run = store.start_run("eval", "smoke", 0, {})
        store.add_eval_item(run, "simple_python", "simple_python_0", Outcome(False, "parse_failure", "ast_decoder:decoder_failed", "no call"), "hi")
        store.add_eval_result(run, {k: v for k, v in BASE.items()})
        other = store.start_run("eval", "smoke", 0, {})
        store.add_eval_result(other, {**BASE, "score": 0.2})
        assert [r["score"] for r in store.eval_results()] == [0.15, 0.2]
        assert store.eval_results([run])[0]["errors"] == BASE["errors"]
        item = next(store.db.query("SELECT * FROM eval_items"))
        assert (item["valid"], item["kind"], item["output"]) == (0, "parse_failure", "hi")


def test_adapter_step_from_state_or_folder_name(tmp_path):
    exported = tmp_path / "adapter"
    exported.mkdir()
    (exported / "state.json").write_text(json.dumps({"step": 7, "level": 3}))
    checkpoint = tmp_path / "step-000012"
    checkpoint.mkdir()
    assert adapter_step(str(exported)) == 7
    assert adapter_step(str(checkpoint)) == 12
    assert adapter_step(str(tmp_path)) is None and adapter_step(None) is None
