"""The user's tasks in a run, with scripted models (a real tokenizer): training slots draw only
training tasks, a task missing fields is completed by the generator with its query and tools
fixed, the expected arguments are checked by code (the verifier is asked only when they were
given), and examples mode shows real queries to the generator as data."""

from __future__ import annotations

import asyncio
import json
import re

from scripted import ScriptedBackend, role_of

from trustee_lite.config import parse_recipe
from trustee_lite.env.chat import PolicyChat
from trustee_lite.env.episode import Policy
from trustee_lite.env.pool.tools import load_pool
from trustee_lite.env.simulator import SimulatorClient
from trustee_lite.lm import GenerationService
from trustee_lite.runtime import Runtime, read_recipe_tasks, task_set
from trustee_lite.store import Store

TASKS = [
    {"id": "paris", "query": "Weather in Paris?", "tools": ["get_current_weather", "get_uv_index"],
     "expected_calls": [{"name": "get_current_weather", "arguments": {"location": "Paris"}}]},
    {"id": "tokyo", "query": "Weather in Tokyo?", "tools": ["get_current_weather"], "intent": "Tokyo now.",
     "persona": "Short.", "expected_calls": [{"name": "get_current_weather", "arguments": {"location": "Tokyo"}}]},
    {"id": "aapl", "query": "AAPL quote", "tools": ["get_stock_quote"], "intent": "AAPL now.", "persona": "Trader.",
     "expected_calls": ["get_stock_quote"]},
    {"id": "accounts", "query": "My accounts", "tools": ["list_bank_accounts"]},
    {"id": "rate", "query": "EUR to USD?", "tools": ["get_exchange_rate"], "intent": "EUR/USD.", "persona": "Brief.",
     "expected_calls": ["get_exchange_rate"]},
]


def simulator(prompts: list[tuple[str, str]]):
    def answer(request) -> str:
        role = role_of(request)
        prompts.append((role, request.messages[-1]["content"]))
        fields = request.json_schema["properties"]
        if role == "task_generator":
            return json.dumps({"user_intent": "Generated goal.", "user_persona": "Someone.",
                               "expected_tool_calls": fields["expected_tool_calls"]["items"]["enum"][:1],
                               "first_user_query": "Generated query"})
        if role == "task_completer":  # only the fields the file left out are asked for
            done = {"user_intent": "Completed goal.", "user_persona": "Completed persona.",
                    "expected_tool_calls": ["list_bank_accounts"]}
            return json.dumps({k: v for k, v in done.items() if k in fields})
        return json.dumps({"user_simulator": {"response": "", "reward": 1},
                           "tool_simulator": {"result": '{"ok": true}', "reward": 1},
                           "verifier": {"reasoning": "fine", "reward": 1}}[role])
    return answer


def policy(request, tokenizer) -> str:
    """Always calls get_current_weather for Paris (right for one task, wrong for the others)."""
    return '<tool_call>\n{"name": "get_current_weather", "arguments": {"location": "Paris"}}\n</tool_call>'


def run_slots(tmp_path, tokenizer, mode: str, slots: int, holdout: float):
    (tmp_path / "tasks.jsonl").write_text("\n".join(json.dumps(t) for t in TASKS) + "\n")
    recipe = parse_recipe({
        "name": "own", "seed": 4, "policy": {"model": "embedded", "max_new_tokens": 40, "max_response_tokens": 80},
        "simulator": {"backend": "transformers", "model": "scripted", "retries": 0},
        "tasks": {"file": "tasks.jsonl", "mode": mode, "holdout": holdout, "examples": 2},
        "rollout": {"rollouts_per_task": 2},
        "curriculum": {"initial_level": 1, "soft_eps": 0.0, "step": 0,
                       "knobs": {"max_assistant_turns": {"scale": 0.0, "min": 1, "max": 1}}},
    }, "own.yaml", tmp_path)
    prompts: list[tuple[str, str]] = []

    async def main():
        pool = load_pool()
        async with GenerationService(ScriptedBackend(lambda r: policy(r, tokenizer), tokenizer)) as policy_service, \
                GenerationService(ScriptedBackend(simulator(prompts))) as sim_service:
            with Store(tmp_path / "db.sqlite") as store:
                env = Runtime(recipe, store, pool, Policy(policy_service, PolicyChat(tokenizer), 1.0, 1.0),
                              SimulatorClient(sim_service, store, recipe.simulator), policy_service, sim_service,
                              task_set(recipe, read_recipe_tasks(recipe), pool))
                run_id = store.start_run("train", "own", 4, {})
                groups = await env.play_tasks(run_id, 2 * slots, 2, lambda i: env.draft_slot(i, 1, 4), 4, "t", step=1)
                rows = store.db.execute("SELECT origin, first_user_query, user_intent, user_persona, expected_tool_calls "
                                        "FROM tasks ORDER BY task_index").fetchall()
                return env.tasks, groups, rows

    tasks, groups, rows = asyncio.run(main())
    return tasks, groups, rows, prompts


def test_training_slots_play_training_tasks_completed_and_checked(tmp_path, smol_tokenizer):
    tasks, groups, rows, prompts = run_slots(tmp_path, smol_tokenizer, "replace", slots=9, holdout=0.4)
    held = {f"tasks.jsonl#{t.id}" for t in tasks.held_out}
    train = {f"tasks.jsonl#{t.id}" for t in tasks.train}
    assert len(held) == 2 and len(train) == 3
    origins = [r[0] for r in rows]
    assert set(origins) == train and not set(origins) & held  # every training task played, no held-out one
    by_id = {t["id"]: t for t in TASKS}
    for origin, query, intent, persona, expected in rows:
        task = by_id[origin.split("#")[1]]
        assert query == task["query"]  # the user's query, as written
        assert intent == task.get("intent", "Completed goal.") and persona == task.get("persona", "Completed persona.")
    completions = [p for role, p in prompts if role == "task_completer"]
    assert all(role != "task_generator" for role, _ in prompts)  # replace: nothing generated from scratch
    incomplete = {f"tasks.jsonl#{t.id}" for t in tasks.train if not t.complete}
    assert incomplete and len(completions) == sum(r[0] in incomplete for r in rows)  # one completion a slot
    for prompt in completions:
        assert re.search(r'"(Weather in Paris\?|My accounts)"', prompt)  # the query shown as a JSON string
    rewards = {}
    for (origin, *_), group in zip(rows, groups):
        rewards.setdefault(origin.split("#")[1], set()).update(t.final_reward for t in group)
    expected = {"paris": {1.0}, "tokyo": {-1.0}, "aapl": {1.0}, "accounts": {1.0}, "rate": {1.0}}
    assert rewards == {k: expected[k] for k in rewards}  # Tokyo: the code check fails, the verifier is not asked
    verdicts = sum(role == "verifier" for role, _ in prompts)
    assert verdicts == sum(len(g) for (o, *_), g in zip(rows, groups) if not o.endswith("#tokyo"))


def test_examples_mode_shows_real_queries_as_data(tmp_path, smol_tokenizer):
    tasks, groups, rows, prompts = run_slots(tmp_path, smol_tokenizer, "examples", slots=2, holdout=0.0)
    generated = [p for role, p in prompts if role == "task_generator"]
    assert len(generated) == 2 and all(r[0] is None and r[1] == "Generated query" for r in rows)
    for prompt in generated:
        shown = re.findall(r'^- (".*")$', prompt, re.MULTILINE)
        assert len(shown) == 2 and {json.loads(s) for s in shown} <= {t["query"] for t in TASKS}
