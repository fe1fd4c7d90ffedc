"""The BFCL harness end to end, without a model: BFCL's own possible answers, written as the
policy writes tool calls, go through the rollout's parser and BFCL's checker."""

from __future__ import annotations

import asyncio
import json

import pytest
from bfcl_answers import answer_calls, answer_text, ground_truth_call, scripted_multi_turn

from trustee_lite.env.toolcalls import format_call
from trustee_lite.errors import UserError
from trustee_lite.evaluation import bfcl

LISTED = ("simple_python", "multiple", "parallel", "parallel_multiple", "irrelevance", "live_simple", "live_multiple")
PER_CATEGORY = 25

# Items whose possible answers contradict their own function docs, so no output can pass:
CANNOT_PASS = {
    "live_simple_106-63-0": "required 'auto_loan_payment_start' is absent from the possible answer",
    "live_simple_112-68-0": "required 'acc_routing_start' is absent from the possible answer",
    "live_multiple_507-149-4": "required 'origin_airport' may only be left out ([\"\"])",
    "live_multiple_862-181-3": "the answer gives 'journey_start_time', which Trains_1_FindTrains does not define",
    "live_multiple_964-207-0": "required 'statement' is absent from the possible answer",
}

REFUSAL = "None of these functions can answer that, so I will not call any."


def right_answer(category: str, item: bfcl.Item) -> str:
    return REFUSAL if item.answer is None else answer_text(item)


@pytest.mark.parametrize("category", LISTED)
def test_possible_answers_score_100_percent(category):
    items = bfcl.load(category, PER_CATEGORY)
    assert len(items) == PER_CATEGORY
    outcomes = {item.id: bfcl.score(category, item, right_answer(category, item)) for item in items}
    failed = {i: (o.error_type, o.detail) for i, o in outcomes.items() if not o.valid}
    assert failed == {}


@pytest.mark.parametrize("category", bfcl.AST_CATEGORIES)
def test_every_answerable_item_passes(category):
    """The whole category: every item passes except the few whose data cannot."""
    items = bfcl.load(category)
    failed = {item.id for item in items if not bfcl.score(category, item, answer_text(item)).valid}
    assert failed == {i for i in CANNOT_PASS if i.startswith(category + "_")}


@pytest.mark.parametrize("category", [c for c in LISTED if c != "irrelevance"])
def test_wrong_function_name_scores_zero(category):
    items = bfcl.load(category, PER_CATEGORY)
    for item in items:
        calls = answer_calls(item.answer, item.functions)
        calls[0] = (calls[0][0] + "_v2", calls[0][1])
        outcome = bfcl.score(category, item, "\n".join(format_call(n, a) for n, a in calls))
        assert not outcome.valid and outcome.kind == "wrong_function", (item.id, outcome)


@pytest.mark.parametrize("category", [c for c in LISTED if c != "irrelevance"])
def test_missing_required_argument_scores_zero(category):
    corrupted = 0
    for item in bfcl.load(category, PER_CATEGORY):
        calls = answer_calls(item.answer, item.functions)
        name, args = calls[0]
        required = next(f for f in item.functions if f["name"] == name)["parameters"].get("required", [])
        if not required:
            continue
        calls[0] = (name, {k: v for k, v in args.items() if k != required[0]})
        outcome = bfcl.score(category, item, "\n".join(format_call(n, a) for n, a in calls))
        assert not outcome.valid and outcome.kind == "wrong_arguments", (item.id, outcome)
        assert "missing_required" in outcome.error_type or "cannot_find_match" in outcome.error_type
        corrupted += 1
    assert corrupted >= 20


def test_irrelevance_call_is_a_miss():
    for item in bfcl.load("irrelevance", PER_CATEGORY):
        tool = item.functions[0]
        outcome = bfcl.score("irrelevance", item, format_call(tool["name"], {}))
        assert not outcome.valid and outcome.kind == "irrelevance_miss"
        assert outcome.error_type == "irrelevance_error:decoder_success"


def test_output_without_a_call_is_a_parse_failure():
    item = bfcl.load("simple_python", 1)[0]
    for text in ("The area is 25.", '<tool_call>{"name": "calculate_triangle_area", "arguments": {"base": 10,</tool_call>'):
        outcome = bfcl.score("simple_python", item, text)
        assert not outcome.valid and outcome.kind == "parse_failure"


def test_live_relevance_needs_a_call():
    item = bfcl.load("live_relevance", 1)[0]
    assert bfcl.score("live_relevance", item, REFUSAL).kind == "no_call"
    assert bfcl.score("live_relevance", item, format_call(item.functions[0]["name"], {})).valid


def test_tool_schema_uses_openapi_types():
    doc = {"name": "math.hypot", "description": "Norm.", "parameters": {"type": "dict", "properties": {
        "x": {"type": "float", "description": "x."}, "pair": {"type": "tuple", "items": {"type": "integer"}},
        "opts": {"type": "dict", "properties": {"deep": {"type": "any"}}}}, "required": ["x"]}}
    tool = bfcl.to_tool(doc)
    params = tool["function"]["parameters"]
    assert tool["function"]["name"] == "math.hypot"  # dots kept: the checker is told not to convert them
    assert params["type"] == "object" and params["required"] == ["x"]
    assert params["properties"]["x"] == {"type": "number", "description": "x. This is a float type value."}
    assert params["properties"]["pair"] == {"type": "array", "items": {"type": "integer"}}
    assert params["properties"]["opts"]["properties"]["deep"] == {}  # any: no type constraint (schema_types.py)
    assert doc["parameters"]["type"] == "dict"  # the BFCL doc itself is untouched
    json.dumps(tool)


def test_live_items_keep_their_system_messages():
    items = [i for i in bfcl.load("live_multiple") if any(m["role"] == "system" for m in i.messages)]
    assert items, "live_multiple has questions with a system message"
    item = items[0]
    assert bfcl.system_text(item) and all(m["role"] != "system" for m in bfcl.conversation(item))


def test_categories_are_checked():
    assert bfcl.check_categories(["simple_python", "simple_python", "irrelevance"]) == ["simple_python", "irrelevance"]
    assert bfcl.check_categories(["all"]) == list(bfcl.CATEGORIES)
    with pytest.raises(UserError, match="--bfcl: unknown or unsupported BFCL category 'simple_java'"):
        bfcl.check_categories(["simple_java"])


def play(item, reply, **kw):
    return asyncio.run(bfcl.play_multi_turn(item, reply, **kw))


@pytest.mark.parametrize("category", bfcl.MULTI_TURN_CATEGORIES)
def test_multi_turn_ground_truth_scores_100_percent(category):
    """Every question: the ground truth's calls, as the policy writes them, executed on BFCL's
    own API classes in-process, pass BFCL's multi-turn checker."""
    items = bfcl.load(category)
    assert len(items) == 200
    failed = {}
    for item in items:
        decoded, texts = play(item, scripted_multi_turn(item))
        assert len(decoded) == len(item.turns) and len(texts) == sum(2 if calls else 1 for calls in item.answer)
        outcome = bfcl.score_multi_turn(item, decoded)
        if not outcome.valid:
            failed[item.id] = (outcome.error_type, outcome.detail)
    assert failed == {}


def test_multi_turn_corrupted_calls_fail():
    items = bfcl.load("multi_turn_base", 40)

    def renamed(turn, calls):
        return [(calls[0][0] + "_v2", calls[0][1]), *calls[1:]] if turn == 0 else calls

    def required(item, name):
        return next(f for f in item.functions if f["name"] == name)["parameters"].get("required", [])

    def missing_argument(turn, calls):
        name, args = calls[0]
        return [(name, {k: v for k, v in args.items() if k != required(item, name)[0]}), *calls[1:]] if turn == 0 else calls

    for change in (renamed, missing_argument):
        scored = 0
        for item in items:
            if change is missing_argument and not required(item, ground_truth_call(item.answer[0][0], item.functions)[0]):
                continue  # the first call has no required argument to drop
            outcome = bfcl.score_multi_turn(item, play(item, scripted_multi_turn(item, change))[0])
            assert not outcome.valid and outcome.kind == "wrong_outcome", (change.__name__, item.id, outcome)
            assert outcome.error_type in ("multi_turn:instance_state_mismatch", "multi_turn:execution_response_mismatch")
            scored += 1
        assert scored >= 20


def test_multi_turn_without_calls_and_past_the_step_limit():
    item = bfcl.load("multi_turn_base", 1)[0]

    async def silent(messages):
        return "I would rather not."

    async def restless(messages):
        return format_call("pwd", {})

    outcome = bfcl.score_multi_turn(item, play(item, silent)[0])
    assert outcome.kind == "no_call" and outcome.error_type == "multi_turn:empty_turn_model_response"
    decoded, texts = play(item, restless, step_limit=3)
    assert len(decoded) == 1 and len(texts) == 3  # stopped in the first turn
    assert bfcl.score_multi_turn(item, decoded).kind == "step_limit"


def test_call_text_is_python():
    from trustee_lite.env.toolcalls import ToolCall

    call = ToolCall("mv", {"source": "it's.pdf", "n": 2, "flags": [True, None]})
    assert bfcl.call_text(call) == "mv(source=\"it's.pdf\", n=2, flags=[True, None])"


def test_eval_multi_turn_keeps_each_turn_as_generated(family_tokenizers, tmp_path):
    """eval makes training's choice: a policy turn stays in the context exactly as generated (a
    Qwen3 think block included) and only the new messages are rendered after it."""
    from scripted import ScriptedBackend

    from trustee_lite.config import CurriculumConfig
    from trustee_lite.env.chat import PolicyChat
    from trustee_lite.evaluation.evaluate import Plan, _bfcl_category
    from trustee_lite.lm import GenerationService
    from trustee_lite.store import Store

    tok = family_tokenizers["qwen3"]
    item = bfcl.load("multi_turn_base", 1)[0]
    turn = -1

    def policy(request):
        nonlocal turn
        prompt = tok.decode(request.prompt_ids)
        if "<tool_response>" in prompt[prompt.rindex("<|im_start|>user"):]:
            return "<think>\nResults are in.\n</think>\n\nDone."
        turn += 1
        calls = [ground_truth_call(c, item.functions) for c in item.answer[turn]]
        return "<think>\nPlan the calls.\n</think>\n\n" + "\n".join(format_call(n, a) for n, a in calls)

    backend = ScriptedBackend(policy, tokenizer=tok)
    plan = Plan(["multi_turn_base"], 1, 0, 1, 256, CurriculumConfig())

    async def run():
        async with GenerationService(backend) as service:
            with Store(tmp_path / "db.sqlite") as store:
                run_id = store.start_run("eval", "t", 0, {})
                return await _bfcl_category("multi_turn_base", [item], "Be useful.", service, PolicyChat(tok), store,
                                            run_id, plan, {"adapter": None, "adapter_step": None})

    record = asyncio.run(run())
    assert record["score"] == 1.0
    requests = [r for batch in backend.batches for r in batch]
    assert len(requests) == sum(2 if calls else 1 for calls in item.answer)
    for before, after in zip(requests, requests[1:]):
        assert after.prompt_ids[: len(before.prompt_ids)] == before.prompt_ids  # the context so far, untouched
        assert tok.decode(after.prompt_ids[len(before.prompt_ids):]).startswith("<think>\n")  # then the turn as sampled
    assert tok.decode(requests[-1].prompt_ids).count("<think>\nPlan the calls.\n</think>") == len(item.answer)
