"""The one tool-call parser, on hand-written policy turns."""

from __future__ import annotations

from trustee_lite.env.toolcalls import format_call, parse_turn


def test_single_valid_call():
    turn = parse_turn('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>')
    assert len(turn.calls) == 1
    call = turn.calls[0]
    assert (call.name, call.arguments, call.malformed) == ("get_weather", {"city": "Paris"}, False)
    assert turn.content == ""


def test_several_calls_in_one_turn_keep_their_order():
    text = (
        '<tool_call>{"name": "a", "arguments": {"x": 1}}</tool_call>\n'
        '<tool_call>{"name": "b", "arguments": {}}</tool_call>'
        '<tool_call>{"name": "c", "arguments": {"y": [1, 2]}}</tool_call>'
    )
    assert [(c.name, c.arguments) for c in parse_turn(text).calls] == [("a", {"x": 1}), ("b", {}), ("c", {"y": [1, 2]})]


def test_text_around_calls_is_the_content():
    text = 'Let me check.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>\nOne moment.'
    turn = parse_turn(text)
    assert turn.content == "Let me check.\n\nOne moment."
    assert [c.name for c in turn.calls] == ["f"]


def test_turn_without_calls():
    turn = parse_turn("Which city do you mean?")
    assert turn.calls == () and turn.content == "Which city do you mean?"


def test_malformed_json_is_kept_with_the_reason():
    turn = parse_turn('<tool_call>{"name": "f", "arguments": {"x": }</tool_call>')
    (call,) = turn.calls
    assert call.malformed and call.name is None
    assert call.error.startswith("invalid JSON: Expecting value")
    assert call.raw == '{"name": "f", "arguments": {"x": }'


def test_missing_name_is_malformed():
    (call,) = parse_turn('<tool_call>{"arguments": {"x": 1}}</tool_call>').calls
    assert call.error == 'missing "name"'


def test_arguments_that_are_not_an_object_are_malformed():
    (call,) = parse_turn('<tool_call>{"name": "f", "arguments": [1, 2]}</tool_call>').calls
    assert call.name == "f" and call.error == '"arguments" must be an object, got list'


def test_arguments_given_as_a_json_string_are_decoded():
    (call,) = parse_turn('<tool_call>{"name": "f", "arguments": "{\\"x\\": 2}"}</tool_call>').calls
    assert call.arguments == {"x": 2} and not call.malformed


def test_unclosed_block_runs_to_the_end_and_is_still_read():
    (call,) = parse_turn('Sure. <tool_call>{"name": "f", "arguments": {"q": "a"}}').calls
    assert (call.name, call.arguments, call.malformed) == ("f", {"q": "a"}, False)


def test_unclosed_invalid_block_says_the_tag_is_missing():
    (call,) = parse_turn('<tool_call>{"name": "f", "argu').calls
    assert call.malformed and call.error.endswith("(missing </tool_call>)")


def test_stray_words_inside_the_block_are_tolerated():
    (call,) = parse_turn('<tool_call>call: {"name": "f", "arguments": {}} done</tool_call>').calls
    assert call.name == "f" and not call.malformed


def test_fenced_json_inside_the_block():
    (call,) = parse_turn('<tool_call>\n```json\n{"name": "f", "arguments": {"a": 1}}\n```\n</tool_call>').calls
    assert call.arguments == {"a": 1}


def test_json_list_of_calls_in_one_block():
    turn = parse_turn('<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {"k": 1}}]</tool_call>')
    assert [(c.name, c.arguments) for c in turn.calls] == [("a", {}), ("b", {"k": 1})]


def test_format_call_round_trips():
    (call,) = parse_turn(format_call("book_hotel", {"nights": 2, "city": "Rome"})).calls
    assert (call.name, call.arguments) == ("book_hotel", {"nights": 2, "city": "Rome"})


def test_calls_inside_a_think_block_are_not_calls():
    text = '<think>\nMaybe <tool_call>{"name": "a", "arguments": {}}</tool_call>? No.\n</think>\n\nI need your city first.'
    turn = parse_turn(text)
    assert turn.calls == () and turn.content == "I need your city first."
    assert [c.name for c in parse_turn('<think>\nplan\n</think>\n\n<tool_call>{"name": "b", "arguments": {}}</tool_call>').calls] == ["b"]
