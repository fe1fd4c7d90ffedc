"""The policy's conversation as exact tokens: incremental segments equal the template's full
rendering, and only the policy's own tokens are marked as the policy's."""

from __future__ import annotations

import pytest
from test_role_output import WEATHER

from trustee_lite.env.chat import PolicyChat


@pytest.fixture(scope="module")
def chat(smol_tokenizer):
    return PolicyChat(smol_tokenizer)


def test_smollm2_template_gets_the_hermes_tool_block(chat, smol_tokenizer):
    assert not chat.native_tools and chat.tool_role == "tool"
    text = smol_tokenizer.decode(chat.first_prompt("Be useful.", "Rain in Paris?", [WEATHER]))
    assert text.startswith("<|im_start|>system\nBe useful.\n\n# Tools")
    assert '"name":"get_weather"' in text and "<tool_call>" in text
    assert text.endswith("<|im_start|>user\nRain in Paris?<|im_end|>\n<|im_start|>assistant\n")


def test_segments_concatenate_to_the_full_rendering(chat, smol_tokenizer):
    """First prompt + generated turn + continuation == the template applied to the whole conversation."""
    eos = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    system, query = "Be useful.", "Rain in Paris?"
    reply_1 = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    reply_2 = "No rain in Paris today."
    gen_1 = chat.encode(reply_1) + [eos]
    gen_2 = chat.encode(reply_2) + [eos]
    tool_msg = chat.tool_message("get_weather", '{"rain": false}')
    user_msg = chat.user_message("Thanks! And tomorrow?")

    ids = chat.first_prompt(system, query, [WEATHER])
    ids += gen_1 + chat.continuation([tool_msg], last_token=eos)
    ids += gen_2 + chat.continuation([user_msg], last_token=eos)

    from trustee_lite.env.chat import hermes_tool_block

    full = smol_tokenizer.apply_chat_template(
        [{"role": "system", "content": f"{system}\n\n{hermes_tool_block([WEATHER])}"},
         {"role": "user", "content": query}, {"role": "assistant", "content": reply_1}, tool_msg,
         {"role": "assistant", "content": reply_2}, user_msg],
        tokenize=False, add_generation_prompt=True)
    assert smol_tokenizer.decode(ids) == full
    assert ids == chat.encode(full)


def test_continuation_after_a_cut_turn_closes_it(chat, smol_tokenizer):
    """A turn cut by the length limit has no end token; the continuation supplies it (not the policy)."""
    seg = chat.continuation([chat.user_message("Hello?")], last_token=None)
    assert smol_tokenizer.decode(seg) == "<|im_end|>\n<|im_start|>user\nHello?<|im_end|>\n<|im_start|>assistant\n"
    eos = smol_tokenizer.convert_tokens_to_ids("<|im_end|>")
    seg_after_eos = chat.continuation([chat.user_message("Hello?")], last_token=eos)
    assert seg_after_eos == seg[1:]


def test_tool_results_are_wrapped_for_templates_without_tool_support(chat):
    msg = chat.tool_message("get_weather", "sunny")
    assert msg == {"role": "tool", "content": '<tool_response>\n{"name": "get_weather", "content": "sunny"}\n</tool_response>'}


def test_hermes_block_shows_a_call_of_the_tasks_own_tool():
    from trustee_lite.env.chat import example_call, hermes_tool_block

    tool = {"type": "function", "function": {"name": "book_table", "parameters": {
        "type": "object", "properties": {"people": {"type": "integer"}, "name": {"type": "string"},
                                         "note": {"type": "string"}}, "required": ["people", "name"]}}}
    assert example_call(tool) == ("book_table", {"people": 1, "name": "..."})
    assert '"name": "book_table", "arguments": {"people": 1, "name": "..."}' in hermes_tool_block((tool,))


def test_prompt_of_a_conversation(chat, smol_tokenizer):
    """BFCL questions are conversations: the same system prompt and tool block, then every message."""
    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Rain in Paris?"}]
    text = smol_tokenizer.decode(chat.prompt("Be useful.", messages, [WEATHER]))
    assert text.startswith("<|im_start|>system\nBe useful.\n\n# Tools")
    assert "<|im_start|>assistant\nHello.<|im_end|>" in text
    assert text.endswith("<|im_start|>user\nRain in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert chat.prompt("Be useful.", messages[2:], [WEATHER]) == chat.first_prompt("Be useful.", "Rain in Paris?", [WEATHER])
