"""The store refuses a damaged or read-only file before anything is loaded or written, and an
SQLite error after opening ends the command in one line naming the file."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import sys
from pathlib import Path

from trustee_lite.__main__ import main
from trustee_lite.store import Store

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "recipes" / "smoke.yaml")


def recorded(path: Path) -> Path:
    with Store(path) as store:
        run = store.start_run("simulate", "smoke", 0, {})
        for i in range(300):
            store.cache_put(f"key {i}", "tool", "x" * 500, 10)
        store.finish_run(run, "done", {})
    return path


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_damaged_file_is_refused_before_any_model_loads_and_left_as_it_was(tmp_path, capsys):
    path = recorded(tmp_path / "t.sqlite")
    with path.open("r+b") as f:  # one data page overwritten, the size intact
        f.seek(20 * 4096)
        f.write(os.urandom(4096))
    before = digest(path)
    for argv in (["simulate", SMOKE, "--episodes", "1"], ["report"], ["compare"]):
        assert main([*argv, "--db", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"database {path}: damaged (" in err and ".recover" in err, err
    assert digest(path) == before and not Path(f"{path}-wal").exists()


def test_an_sqlite_error_after_opening_is_one_line_naming_the_file(tmp_path, capsys, monkeypatch):
    path = recorded(tmp_path / "t.sqlite")

    def full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")

    monkeypatch.setattr(Store, "start_run", full)  # the first write of a command
    assert main(["simulate", SMOKE, "--episodes", "1", "--db", str(path)]) == 2
    *loading, last = capsys.readouterr().err.splitlines()  # the models loaded before the run's first write
    assert last == f"database {path}: database or disk is full (SQLite); what was committed before is kept"
    assert all(line.startswith("loading ") for line in loading), loading
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM cache").fetchone()[0] == 300


def test_a_read_only_file_is_refused_for_an_ordinary_user(tmp_path):
    """Run as an unprivileged user (root writes through mode 444): a forked child drops to
    `nobody` and runs the command; nothing is created beside the file."""
    folder = Path("/tmp") / f"trustee-ro-{os.getpid()}"
    folder.mkdir(mode=0o755, exist_ok=True)
    path = recorded(folder / "ro.sqlite")
    path.chmod(0o444)
    before = digest(path)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child: no exec (the interpreter may live where nobody cannot read)
        os.close(read)
        sys.stderr = open(write, "w")  # noqa: SIM115 - the child's one line, read by the parent
        if os.getuid() == 0:
            os.setgid(65534)
            os.setuid(65534)
        status = main(["simulate", SMOKE, "--episodes", "1", "--db", str(path)])
        sys.stderr.flush()
        os._exit(status)
    os.close(write)
    err = os.read(read, 65536).decode()
    status = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    try:
        assert status == 2 and err.count("\n") == 1, err
        assert err.startswith(f"database {path}: the file is read-only"), err
        assert digest(path) == before and sorted(p.name for p in folder.iterdir()) == ["ro.sqlite"]
    finally:
        path.chmod(0o644)
        for p in folder.iterdir():
            p.unlink()
        folder.rmdir()


def test_compare_and_report_show_how_a_run_ended(tmp_path):
    from trustee_lite.evaluation.tables import compare_view
    from trustee_lite.report import data

    path = tmp_path / "t.sqlite"
    with Store(path) as store:
        ok, failed = store.start_run("eval", "smoke", 0, {}), store.start_run("eval", "smoke", 1, {})
        for run in (ok, failed):
            store.add_eval_result(run, {"adapter": None, "adapter_step": None, "benchmark": "bfcl",
                                        "category": "simple_python", "count": 2, "score": 0.5, "errors": {}})
        store.finish_run(ok, "done", {})
        store.finish_run(failed, "failed", {"failure": "transformers: CUDA out of memory"})
        series = {r.id: r for r in data.runs(store)}
    assert (series[failed].status, series[failed].failure) == ("failed", "transformers: CUDA out of memory")
    assert series[ok].failure is None
    view = compare_view(str(path), None)
    assert f"run {failed} (eval): failed: transformers: CUDA out of memory" in view and f"run {ok} (eval)" not in view


def test_a_disk_that_fills_during_simulate_ends_in_one_line_with_the_file_intact(tmp_path, capsys, monkeypatch):
    """SQLite's page limit stands in for a full disk: the first writes fit, a later one does not."""
    path = recorded(tmp_path / "t.sqlite")
    opened = Store.__init__

    def with_a_page_limit(self, where):
        opened(self, where)
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        self.db.execute(f"PRAGMA max_page_count = {pages + 2}")  # the run row fits; the simulator's answers do not

    monkeypatch.setattr(Store, "__init__", with_a_page_limit)
    assert main(["simulate", SMOKE, "--episodes", "2", "--db", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"database {path}: database or disk is full (SQLite); what was committed before is kept", err
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert conn.execute("SELECT count(*) FROM cache").fetchone()[0] >= 300  # nothing recorded before was lost


def test_tools_export_to_a_place_that_cannot_be_written_is_one_line(tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "tools.json"
    assert main(["tools", "export", SMOKE, "--out", str(out), "--db", str(tmp_path / "d.sqlite")]) == 2
    err = capsys.readouterr().err
    assert err == f"--out {out}: cannot be written ({tmp_path / 'a_file'} is not a writable folder)\n"
    good = tmp_path / "tools.json"
    assert main(["tools", "export", SMOKE, "--out", str(good), "--db", str(tmp_path / "d.sqlite")]) == 0
    assert good.is_file() and not (tmp_path / "tools.json.part").exists()
