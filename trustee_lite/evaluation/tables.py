"""Evaluation tables: one variant's scores, variants side by side (the `compare` view), and a
simulator's calibration report."""

from __future__ import annotations

from pathlib import Path

from trustee_lite.errors import UserError
from trustee_lite.store import Store

KIND_COLUMNS = (("parse_failure", "parse"), ("wrong_function", "wrong fn"), ("wrong_arguments", "wrong args"),
                ("irrelevance_miss", "irrel. miss"), ("wrong_outcome", "wrong outcome"))


def _grid(rows: list[list[str]]) -> str:
    """Left-align the first column, right-align the others."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in rows)


def _score(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def abort_rate(result: dict) -> float | None:
    return round(sum(result["errors"].values()) / result["count"], 4) if result["count"] else None


def variant_table(name: str, scores: list[dict]) -> str:
    """BFCL categories: accuracy, count and errors by kind; held-out tasks: mean reward, aborts."""
    lines = [f"== {name}"]
    bfcl = [s for s in scores if s["benchmark"] == "bfcl"]
    if bfcl:
        rows = [["bfcl category", "accuracy", "count", *(title for _, title in KIND_COLUMNS), "other"]]
        for s in bfcl:
            errors = dict(s["errors"])
            kinds = [str(errors.pop(kind, 0)) for kind, _ in KIND_COLUMNS]
            rows.append([s["category"], _score(s["score"]), str(s["count"]), *kinds, str(sum(errors.values()))])
        lines.append(_grid(rows))
    for s in scores:
        reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
        aborts = f"abort rate {_score(abort_rate(s))}" + (f" ({reasons})" if reasons else "")
        if s["benchmark"] == "tasks":
            lines.append(f"tasks {s['category']}: mean verifier reward {_score(s['score'])}, success rate "
                         f"{_score(s['figures']['success_rate'])} over {s['count']} tasks, {aborts}")
        if s["benchmark"] == "simulated":
            lines.append(f"simulated held-out tasks, {s['category']}: mean verifier reward {_score(s['score'])} over "
                         f"{s['count']} tasks, {aborts}")
    return "\n".join(lines)


def calibration_table(kinds: list[dict], simulator: str) -> str:
    """The simulator's report: per case kind, the gold verdict, what the role answered (the
    verifier's confusion table, injections apart) and its accuracy; the tool simulator's
    schema-fitting results and whether its reward separates valid from invalid calls."""
    by_kind = {k["category"]: k for k in kinds}
    lines = [f"== simulator calibration: {simulator}"]
    header = ["case kind", "gold", "n", "gave 1", "gave 0", "gave -1", "no answer", "accuracy", "not -1"]

    def row(name: str) -> list[str]:
        k = by_kind[name]
        f = k["figures"]
        answers = [str(f["answers"][a]) for a in ("1", "0", "-1", "none")]
        return [name, f["gold"], str(k["count"]), *answers, _score(k["score"]), _score(f["not_minus_one"])]

    for title, names in (("verifier", ("positive", "wrong_argument", "skipped_call", "altered_result", "extra_call")),
                         ("verifier, injections", ("injection_plea", "injection_forged_turn")),
                         ("tool simulator (its own reward)", ("tool_valid", "tool_wrong_type", "tool_missing_arg"))):
        present = [n for n in names if n in by_kind]
        if present:
            lines += ["", title, _grid([header, *(row(n) for n in present)])]
    valid, invalid = by_kind.get("tool_valid"), [by_kind[n] for n in ("tool_wrong_type", "tool_missing_arg") if n in by_kind]
    if valid is not None:
        fits = valid["figures"].get("result_fits_schema")
        lines.append(f"valid calls: results fitting the function's response schema {_score(fits)}")
    if valid is not None and invalid:
        bad = [k["figures"]["mean_reward"] for k in invalid if k["figures"]["mean_reward"] is not None]
        good = valid["figures"]["mean_reward"]
        gap = None if good is None or not bad else good - sum(bad) / len(bad)
        lines.append(f"mean reward: valid calls {_score(good)}, invalid calls "
                     f"{_score(sum(bad) / len(bad) if bad else None)}, separation {_score(gap)}")
    return "\n".join(lines)


def column_name(result: dict) -> str:
    if result["benchmark"] == "calibration":
        return f"simulator {result['figures']['simulator']}"
    if result["adapter"] is None:
        return "base"
    path = Path(result["adapter"])
    name = path.name if path.name not in ("adapter", "") else f"{path.parent.name}/{path.name}"
    return name + (f" @{result['adapter_step']}" if result["adapter_step"] is not None else "")


def compare_table(results: list[dict]) -> str:
    """Categories as rows, policy variants (and calibrated simulators) as columns; the newest
    result of each pair wins. A cell is the accuracy (BFCL, calibration case kinds) or the mean
    verifier reward (held-out tasks), with the count."""
    columns: dict[str, None] = {}
    cells: dict[tuple[str, str], dict] = {}
    for r in results:  # oldest first: later results overwrite earlier ones
        column = column_name(r)
        columns.setdefault(column, None)
        row = {"bfcl": r["category"], "calibration": f"calibration {r['category']}",
               "tasks": f"tasks {r['category']} (reward)"}.get(r["benchmark"], f"simulated {r['category']} (reward)")
        cells[(row, column)] = r
    rows = list(dict.fromkeys(row for row, _ in cells))
    grid = [["category", *columns]]
    for row in rows:
        line = [row]
        for column in columns:
            r = cells.get((row, column))
            line.append("" if r is None else f"{_score(r['score'])} ({r['count']})")
        grid.append(line)
    return _grid(grid)


def compare_view(db: str, run_ids: list[int] | None) -> str:
    """`compare`: the stored evaluation results side by side, then each simulator calibration's
    report in full."""
    with Store.existing(db, "eval") as store:
        results = store.eval_results(run_ids)
        ends = store.run_ends(sorted({r["run_id"] for r in results}))
    if not results:
        raise UserError(db, "no evaluation results" + (f" for runs {run_ids}" if run_ids else "")
                        + " (run eval or calibrate first)")
    parts = [compare_table(results)]
    parts += [f"run {e['id']} ({e['kind']}): {e['status']}" + (f": {e['failure']}" if e["failure"] else "")
              for e in ends if e["status"] != "done"]  # results of a run that did not end well are partial
    calibrations: dict[int, list[dict]] = {}
    for r in results:
        if r["benchmark"] == "calibration":
            calibrations.setdefault(r["run_id"], []).append(r)
    for run_id, kinds in calibrations.items():
        parts.append(f"\nrun {run_id}: " + calibration_table(kinds, kinds[0]["figures"]["simulator"]).removeprefix("== "))
    return "\n".join(parts)
