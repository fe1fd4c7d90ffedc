"""The simulator client: cache hits and misses, retries of unusable answers, abort with a reason."""

from __future__ import annotations

import asyncio

from scripted import ScriptedBackend
from test_role_output import make_task

from trustee_lite.config import SimulatorConfig
from trustee_lite.env import user_simulator
from trustee_lite.env.role import SimulationFailed
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.lm import GenerationService
from trustee_lite.records import Turn
from trustee_lite.store import Store


def ask(answers, store, retries=2, seed=0):
    """Run one user-simulator call with scripted answers given in order."""
    answers = list(answers)
    backend = ScriptedBackend(lambda r: answers.pop(0))
    call = user_simulator.request(make_task(), (Turn(role="assistant", content="Done."),), 1000)

    async def main():
        async with GenerationService(backend, max_wait_s=0) as service:
            client = SimulatorClient(service, store, SimulatorConfig(retries=retries))
            try:
                return await client.run(call, seed, "episode"), client.stats
            except SimulationFailed as failure:
                return failure, client.stats

    return asyncio.run(main())


def test_unusable_answers_are_retried_until_one_parses(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        reply, stats = ask(["no json here", '{"response": "x"}', '{"response": "Thanks", "reward": 1}'], store)
    assert reply.response == "Thanks"
    assert (stats.calls, stats.retries, stats.cache_misses) == (3, 2, 3)


def test_after_all_retries_the_call_fails_with_a_reason(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        failure, stats = ask(["nope", "still nope"], store, retries=1)
    assert isinstance(failure, SimulationFailed)
    assert failure.reason == "user_simulator_invalid"
    assert "no usable answer in 2 attempts" in failure.detail
    assert stats.failures == {"user_simulator_invalid": 1}


def test_a_second_identical_call_is_served_from_the_cache(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        first, _ = ask(['{"response": "A", "reward": 0}'], store)
        second, stats = ask([], store)  # no scripted answers left: the model must not be asked
    assert first == second
    assert (stats.cache_hits, stats.cache_misses) == (1, 0)


def test_another_seed_is_another_cache_entry(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        ask(['{"response": "A", "reward": 0}'], store, seed=1)
        reply, stats = ask(['{"response": "B", "reward": 1}'], store, seed=2)
    assert reply.response == "B" and stats.cache_misses == 1


def test_a_backend_failure_aborts_with_simulator_error(tmp_path):
    with Store(tmp_path / "db.sqlite") as store:
        failure, _ = ask([RuntimeError("context window exceeded")], store)
    assert failure.reason == "simulator_error" and "context window exceeded" in failure.detail
