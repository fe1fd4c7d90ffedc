"""Evaluation tables: one variant's scores, and variants side by side (the `compare` view)."""

from __future__ import annotations

from pathlib import Path

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
        if s["benchmark"] == "simulated":
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(s["errors"].items()))
            lines.append(f"simulated held-out tasks, {s['category']}: mean verifier reward {_score(s['score'])} over "
                         f"{s['count']} tasks, abort rate {_score(abort_rate(s))}" + (f" ({reasons})" if reasons else ""))
    return "\n".join(lines)


def column_name(result: dict) -> str:
    if result["adapter"] is None:
        return "base"
    path = Path(result["adapter"])
    name = path.name if path.name not in ("adapter", "") else f"{path.parent.name}/{path.name}"
    return name + (f" @{result['adapter_step']}" if result["adapter_step"] is not None else "")


def compare_table(results: list[dict]) -> str:
    """Categories as rows, policy variants as columns; the newest result of each pair wins.
    A cell is the accuracy (BFCL) or the mean verifier reward (held-out tasks), with the count."""
    columns: dict[str, None] = {}
    cells: dict[tuple[str, str], dict] = {}
    for r in results:  # oldest first: later results overwrite earlier ones
        column = column_name(r)
        columns.setdefault(column, None)
        row = f"{r['category']}" if r["benchmark"] == "bfcl" else f"simulated {r['category']} (reward)"
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
