"""The simulator behind a real OpenAI-compatible server: llama-cpp-python's server with the
embedded model, on 127.0.0.1. Runs through it, a server lost and back mid-run, a server absent."""

from __future__ import annotations

import json
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from trustee_lite.__main__ import main
from trustee_lite.lm.embedded import embedded_gguf
from trustee_lite.lm.remote import retry_delay, transient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """python -m llama_cpp.server with the embedded GGUF; start() waits until it answers."""

    def __init__(self, port: int):
        self.port = port
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Server:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(embedded_gguf()), "--host", "127.0.0.1",
             "--port", str(self.port), "--n_ctx", "4096", "--n_threads", "2", "--model_alias", "smollm2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 90
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.url}/models", timeout=2).read()
                return self
            except OSError:
                assert self.proc.poll() is None, "the llama.cpp server exited at start"
                time.sleep(0.5)
        raise AssertionError("the llama.cpp server did not start within 90 s")

    def stop(self) -> None:
        """Gone, as a lost server is: SIGTERM, and SIGKILL if an answer in progress holds it up
        (on 2 busy cores one can take longer than the grace period)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


@pytest.fixture()
def server():
    srv = Server(free_port()).start()
    yield srv
    srv.stop()


def recipe_file(tmp_path: Path, url: str, **simulator) -> Path:
    extra = "".join(f"  {k}: {v}\n" for k, v in simulator.items())
    text = textwrap.dedent(f"""\
        name: remote
        policy: {{model: embedded, max_new_tokens: 32, max_response_tokens: 64, batch_size: 4}}
        simulator:
          backend: openai
          base_url: {url}
          model: smollm2
          response_format: json_object
          max_new_tokens: 160
          max_history_chars: 1500
          retries: 1
        """) + extra + "rollout: {rollouts_per_task: 2}\n"
    path = tmp_path / "remote.yaml"
    path.write_text(text)
    return path


def test_simulate_through_the_server(server, tmp_path, capsys):
    recipe = recipe_file(tmp_path, server.url)
    assert main(["simulate", str(recipe), "--episodes", "2", "--db", str(tmp_path / "db.sqlite")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["episodes"] == 2
    assert summary["aborted"] == 0, summary["abort_reasons"]
    assert summary["cache_misses"] > 0


def test_server_lost_mid_run_and_back(tmp_path):
    srv = Server(free_port()).start()
    # A long timeout: on 2 busy cores queued requests wait long; only the stopped server should fail them.
    recipe = recipe_file(tmp_path, srv.url, net_retries=1, backoff_s=0.2, timeout_s=300, max_consecutive_failures=1000)
    db = tmp_path / "db.sqlite"
    run = subprocess.Popen([sys.executable, "-m", "trustee_lite", "-v", "simulate", str(recipe), "--episodes", "8",
                            "--db", str(db)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_rows(db, "SELECT count(*) FROM cache", 2, run)  # a few simulator answers in
        srv.stop()
        _wait_for_rows(db, "SELECT count(*) FROM trajectories WHERE abort_reason = 'simulator_unreachable'", 1, run)
        srv.start()
        out, err = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
        srv.stop()
    assert run.returncode == 0, err[-3000:]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["episodes"] == 8
    assert summary["abort_reasons"].get("simulator_unreachable", 0) >= 1
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert con.execute("SELECT count(*) FROM trajectories").fetchone()[0] == 8
    assert con.execute("SELECT count(*) FROM trajectories WHERE abort_reason IS NULL").fetchone()[0] >= 1


def _wait_for_rows(db: Path, query: str, at_least: int, run: subprocess.Popen, limit_s: float = 600) -> None:
    deadline = time.time() + limit_s
    while time.time() < deadline:
        ended = run.poll() is not None  # read before the query: rows written just before the exit count
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as con:
                    if con.execute(query).fetchone()[0] >= at_least:
                        return
            except sqlite3.OperationalError:
                pass  # the table is not there yet
        assert not ended, f"the run ended before: {query}\n" + run.stderr.read()[-3000:]
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for: {query}")


def test_server_absent_is_one_line_naming_the_url(tmp_path, capsys):
    url = f"http://127.0.0.1:{free_port()}/v1"
    recipe = recipe_file(tmp_path, url)
    assert main(["simulate", str(recipe), "--db", str(tmp_path / "db.sqlite")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("remote.yaml: simulator.base_url: cannot reach the simulator server at " + url), err


def test_policy_only_runs_do_not_need_the_server(tmp_path):
    """BFCL evaluation uses the policy alone: an absent simulator server is not an error there."""
    from trustee_lite.config import load_recipe
    from trustee_lite.errors import UserError
    from trustee_lite.runtime import preflight

    recipe = load_recipe(recipe_file(tmp_path, f"http://127.0.0.1:{free_port()}/v1"))
    preflight(recipe, simulator=False)
    with pytest.raises(UserError, match="cannot reach the simulator server"):
        preflight(recipe)


def test_what_is_retried():
    import openai

    def error(cls, **fields):  # the client's exception types, without an HTTP exchange behind them
        err = cls.__new__(cls)
        err.__dict__.update(fields)
        return err

    def status(code):
        return error(openai.APIStatusError, status_code=code)

    assert transient(error(openai.APIConnectionError)) and transient(error(openai.APITimeoutError))
    assert transient(status(429)) and transient(status(500)) and transient(status(503))
    assert not transient(status(400)) and not transient(status(404)) and not transient(status(409))
    assert not transient(ValueError("x"))
    delays = [retry_delay(a, 0.5) for a in range(8) for _ in range(50)]
    assert all(0 <= d <= 30 for d in delays)
    assert max(retry_delay(0, 0.5) for _ in range(200)) <= 0.5
    assert max(retry_delay(3, 0.5) for _ in range(200)) > 0.5  # grows with the attempt


def test_consecutive_failures_stop_the_run_with_one_line():
    import asyncio

    from trustee_lite.config import SimulatorConfig
    from trustee_lite.errors import UserError
    from trustee_lite.lm.base import GenRequest, Sampling, ServerUnreachable
    from trustee_lite.lm.remote import OpenAIBackend

    url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    backend = OpenAIBackend(SimulatorConfig(backend="openai", base_url=url, model="m", net_retries=1, backoff_s=0.01,
                                            max_consecutive_failures=2), "r.yaml: simulator")
    request = GenRequest(messages=({"role": "user", "content": "hi"},), sampling=Sampling(8, 0.7, 0.95, seed=1))

    async def twice():
        with pytest.raises(ServerUnreachable) as first:
            await backend.agenerate(request)
        assert first.value.reason == "simulator_unreachable"
        with pytest.raises(UserError, match=f"simulator server at {url} failed 2 calls in a row"):
            await backend.agenerate(request)

    asyncio.run(twice())
