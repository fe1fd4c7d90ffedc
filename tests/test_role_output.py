"""Defensive parsing of simulator answers: fences, think tags, stray text, schema checks."""

from __future__ import annotations

import pytest

from trustee_lite.config import KnobTable
from trustee_lite.env import task_generator, tool_simulator, user_simulator, verifier
from trustee_lite.env.knobs import knobs_at
from trustee_lite.env.role import RoleOutputError
from trustee_lite.env.toolcalls import ToolCall
from trustee_lite.jsontext import loads_lenient, strip_think
from trustee_lite.records import Task, TaskDraft, Turn

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather now.", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}}


def make_task(**overrides) -> Task:
    fields = dict(index=0, category="weather", tools=(WEATHER,), knobs=knobs_at(1, KnobTable()),
                  user_intent="Know if it rains in Paris today.", expected_tool_calls=("get_weather",),
                  user_persona="A busy commuter.", first_user_query="Will it rain in Paris today?")
    return Task(**{**fields, **overrides})


def make_draft(task: Task, level: int) -> TaskDraft:
    """The draft a task slot records, for a task made by make_task."""
    return TaskDraft(index=task.index, level=level, category=task.category, knobs=task.knobs,
                     tool_names=task.tool_names, task=task)


def user_call():
    return user_simulator.request(make_task(), (Turn(role="assistant", content="It is sunny."),), 1000)


def test_plain_json():
    assert user_call().parse('{"response": "Thanks!", "reward": 1}') == user_simulator.UserReply("Thanks!", 1)


def test_fenced_json():
    assert user_call().parse('```json\n{"response": "ok", "reward": 0}\n```').reward == 0


def test_think_tags_are_dropped():
    text = '<think>The user wants {"response": "no"}... careful.</think>\n{"response": "Yes please.", "reward": 1}'
    assert user_call().parse(text).response == "Yes please."


def test_only_a_closing_think_tag_in_the_output():
    assert strip_think('planning...</think>{"a": 1}') == '{"a": 1}'


def test_stray_text_around_json():
    reply = user_call().parse('Sure! Here is my answer: {"response": "Go on.", "reward": -1} Hope it helps.')
    assert reply == user_simulator.UserReply("Go on.", -1)


def test_missing_field_is_an_output_error():
    with pytest.raises(RoleOutputError, match="'reward' is a required property"):
        user_call().parse('{"response": "hi"}')


def test_value_outside_the_schema_is_an_output_error():
    with pytest.raises(RoleOutputError, match="reward"):
        user_call().parse('{"response": "hi", "reward": 5}')


def test_no_json_at_all_is_an_output_error():
    with pytest.raises(RoleOutputError, match="no JSON object found"):
        user_call().parse("I would say yes.")


def test_a_json_list_is_not_an_answer():
    with pytest.raises(RoleOutputError, match="expected a JSON object, got list"):
        user_call().parse('[{"response": "x", "reward": 1}]')


def test_loads_lenient_reads_the_first_complete_object():
    assert loads_lenient('noise {"a": {"b": 2}} {"c": 3}') == {"a": {"b": 2}}


def task_call():
    return task_generator.request(3, "weather", (WEATHER,), knobs_at(1, KnobTable()))


def test_task_generator_answer_becomes_a_task():
    task = task_call().parse(
        '{"user_intent": "Know the weather in Oslo for 2 days.", "expected_tool_calls": ["get_weather"],'
        ' "user_persona": "A hiker.", "first_user_query": "  Heading to Oslo, what will the weather be? "}'
    )
    assert (task.index, task.category, task.expected_tool_calls) == (3, "weather", ("get_weather",))
    assert task.first_user_query == "Heading to Oslo, what will the weather be?"


def test_task_generator_rejects_a_query_that_names_a_tool():
    with pytest.raises(RoleOutputError, match="names the tool 'get_weather'"):
        task_call().parse(
            '{"user_intent": "Weather in Oslo please.", "expected_tool_calls": ["get_weather"],'
            ' "user_persona": "A hiker.", "first_user_query": "Use get_weather for Oslo."}'
        )


def test_task_generator_rejects_an_unknown_expected_tool():
    with pytest.raises(RoleOutputError, match="expected_tool_calls"):
        task_call().parse(
            '{"user_intent": "Weather in Oslo please.", "expected_tool_calls": ["fly_to_moon"],'
            ' "user_persona": "A hiker.", "first_user_query": "How is Oslo?"}'
        )


def test_task_generator_schema_lists_only_the_sampled_tools():
    schema = task_call().schema
    assert schema["properties"]["expected_tool_calls"]["items"]["enum"] == ["get_weather"]


def test_tool_simulator_caps_reward_of_a_call_that_breaks_its_schema():
    call = ToolCall(name="get_weather", arguments={"days": "two"})
    role = tool_simulator.request(make_task(), (), call, 1000)
    assert "city" in role.messages[0]["content"] and "is a required property" in role.messages[0]["content"]
    assert role.parse('{"result": "Error: city is required", "reward": 1}').reward == -1


def test_tool_simulator_keeps_the_reward_of_a_valid_call():
    role = tool_simulator.request(make_task(), (), ToolCall(name="get_weather", arguments={"city": "Oslo"}), 1000)
    assert role.parse('{"result": "{\\"temp_c\\": 4}", "reward": 1}').reward == 1


def test_unknown_tool_is_answered_without_the_model():
    reply = tool_simulator.unknown_tool(ToolCall(name="launch_rocket"), make_task())
    assert reply.reward == -1 and "unknown tool 'launch_rocket'" in reply.result
    assert tool_simulator.unknown_tool(ToolCall(name="get_weather"), make_task()) is None


def test_verifier_shows_only_the_first_n_criteria():
    role = verifier.request(make_task(), (Turn(role="assistant", content="hi"),), 2, 1000)
    prompt = role.messages[0]["content"]
    assert "1. Goal" in prompt and "2. Tools" in prompt and "3. Honesty" not in prompt
    assert role.parse('{"reasoning": "fine", "reward": 0}') == verifier.Verdict(0, "fine")
