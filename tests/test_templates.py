"""The model families' chat templates (tests/templates/) against golden strings written from each
family's published template, and the policy's conversation on each family: the tokens of an
episode are the first prompt, then each turn exactly as sampled, then the template's rendering
of the new messages; only the policy's own tokens are marked as its."""

from __future__ import annotations

import pytest

from trustee_lite.env.chat import PolicyChat, TemplateError, TokenTrace, hermes_tool_block

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.",
                                         "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                        "required": ["city"]}}}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
RESULT = '{"temp_c": 18, "sky": "clear"}'
# One fixed conversation: system, user, assistant with a tool call, tool result, user, assistant.
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What's the weather in Paris?"},
    {"role": "assistant", "content": "<think>\nThe user wants the weather.\n</think>\n\nLet me check.", "tool_calls": [CALL]},
    {"role": "tool", "content": RESULT},
    {"role": "user", "content": "Thanks! Is that warm?"},
    {"role": "assistant", "content": "<think>\n18 C is mild.\n</think>\n\nIt is mild: 18 °C and clear."},
]
WITHOUT_THINK = [{**m, "content": m["content"].split("</think>\n\n")[-1]} for m in CONVERSATION]

# --- golden strings, from the published templates (Qwen/Qwen3-8B, Qwen/Qwen2.5-7B-Instruct,
# meta-llama/Llama-3.3-70B-Instruct, whose tool logic is Llama 3.1's) rendered with transformers.
QWEN_SYSTEM = (
    '<|im_start|>system\nYou are a helpful assistant.\n\n# Tools\n\nYou may call one or more functions to assist with '
    'the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>\n'
    '{"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city.", "parameters": '
    '{"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}\n</tools>\n\nFor each '
    'function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n'
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n')
QWEN_TURNS = (
    "<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n<|im_start|>assistant\nLet me check.\n<tool_call>\n"
    '{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n<|im_start|>user\n<tool_response>\n'
    '{"temp_c": 18, "sky": "clear"}\n</tool_response><|im_end|>\n<|im_start|>user\nThanks! Is that warm?<|im_end|>\n')
LLAMA_PROMPT = (
    '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nEnvironment: ipython\nCutting Knowledge Date: '
    'December 2023\nToday Date: 26 Jul 2024\n\nYou are a helpful assistant.<|eot_id|><|start_header_id|>user'
    '<|end_header_id|>\n\nGiven the following functions, please respond with a JSON for a function call with its proper '
    'arguments that best answers the given prompt.\n\nRespond in the format {"name": function name, "parameters": '
    'dictionary of argument name and its value}.Do not use variables.\n\n{\n    "type": "function",\n    "function": {\n'
    '        "name": "get_weather",\n        "description": "Current weather in a city.",\n        "parameters": {\n'
    '            "type": "object",\n            "properties": {\n                "city": {\n                    "type": '
    '"string"\n                }\n            },\n            "required": [\n                "city"\n            ]\n'
    "        }\n    }\n}\n\nWhat's the weather in Paris?<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    '{"name": "get_weather", "parameters": {"city": "Paris"}}<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n'
    '"{\\"temp_c\\": 18, \\"sky\\": \\"clear\\"}"<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nThanks! Is that '
    'warm?<|eot_id|>')
# Gemma 2 has no system and no tool role: the conversation as the policy's chat sends it (the
# system prompt in the first user message, the tool result as a user message).
GEMMA_CONVERSATION = [
    {"role": "user", "content": "You are a helpful assistant.\n\nWhat's the weather in Paris?"},
    {"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'},
    {"role": "user", "content": '<tool_response>\n{"name": "get_weather", "content": "{\\"temp_c\\": 18, \\"sky\\": \\"clear\\"}"}\n</tool_response>'},
    {"role": "assistant", "content": "It is 18 °C and clear."},
    {"role": "user", "content": "Thanks! Is that warm?"},
    {"role": "assistant", "content": "It is mild."},
]
GEMMA_TURNS = (
    "<bos><start_of_turn>user\nYou are a helpful assistant.\n\nWhat's the weather in Paris?<end_of_turn>\n<start_of_turn>"
    'model\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><end_of_turn>\n<start_of_turn>'
    'user\n<tool_response>\n{"name": "get_weather", "content": "{\\"temp_c\\": 18, \\"sky\\": \\"clear\\"}"}\n'
    "</tool_response><end_of_turn>\n<start_of_turn>model\nIt is 18 °C and clear.<end_of_turn>\n<start_of_turn>user\n"
    "Thanks! Is that warm?<end_of_turn>\n<start_of_turn>model\n")
GOLDEN = {
    ("qwen3", "whole", None): QWEN_SYSTEM + QWEN_TURNS + (
        "<|im_start|>assistant\n<think>\n18 C is mild.\n</think>\n\nIt is mild: 18 °C and clear.<|im_end|>\n"),
    ("qwen3", "next", True): QWEN_SYSTEM + QWEN_TURNS + "<|im_start|>assistant\n",
    ("qwen3", "next", False): QWEN_SYSTEM + QWEN_TURNS + "<|im_start|>assistant\n<think>\n\n</think>\n\n",
    ("qwen2", "whole", None): QWEN_SYSTEM + QWEN_TURNS + "<|im_start|>assistant\nIt is mild: 18 °C and clear.<|im_end|>\n",
    ("qwen2", "next", None): QWEN_SYSTEM + QWEN_TURNS + "<|im_start|>assistant\n",
    ("llama3", "whole", None): LLAMA_PROMPT + (
        "<|start_header_id|>assistant<|end_header_id|>\n\nIt is mild: 18 °C and clear.<|eot_id|>"),
    ("llama3", "next", None): LLAMA_PROMPT + "<|start_header_id|>assistant<|end_header_id|>\n\n",
    ("gemma2", "whole", None): GEMMA_TURNS + "It is mild.<end_of_turn>\n",
    ("gemma2", "next", None): GEMMA_TURNS,
}


@pytest.mark.parametrize("family, part, thinking", list(GOLDEN))
def test_template_renders_as_the_published_one(family_tokenizers, family, part, thinking):
    tok = family_tokenizers[family]
    conversation = {"qwen3": CONVERSATION, "gemma2": GEMMA_CONVERSATION}.get(family, WITHOUT_THINK)
    messages = conversation if part == "whole" else conversation[:-1]
    kwargs = {} if thinking is None else {"enable_thinking": thinking}
    tools = None if family == "gemma2" else [TOOL]
    text = tok.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=part == "next", **kwargs)
    assert text == GOLDEN[(family, part, thinking)]


def play(chat: PolicyChat, turns: list[str], tokenizer) -> TokenTrace:
    """First prompt, a tool-calling turn, the tool result, a text turn, a user reply: as an episode
    builds it, each policy turn tokenized as sampled and closed by the end-of-turn token."""
    eos = tokenizer.eos_token_id
    trace = TokenTrace(chat, chat.first_prompt("You are a helpful assistant.", "What's the weather in Paris?", [TOOL]))
    trace.add_policy(chat.encode(turns[0]) + [eos], [-0.5] * (len(chat.encode(turns[0])) + 1))
    trace.add_messages([chat.tool_message("get_weather", RESULT)])
    trace.add_policy(chat.encode(turns[1]) + [eos])
    trace.add_messages([chat.user_message("Thanks! Is that warm?")])
    return trace


HERMES_CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


def test_qwen3_keeps_each_turn_as_sampled_think_block_included(family_tokenizers):
    """Qwen3 would drop the first turn's think block on a fresh rendering of the whole
    conversation; the episode keeps the tokens the policy sampled, in the context it sampled them."""
    tok = family_tokenizers["qwen3"]
    chat = PolicyChat(tok)  # thinking: the template's default (on)
    turn_1 = f"<think>\nThe user wants the weather.\n</think>\n\n{HERMES_CALL}"
    turn_2 = "<think>\nAnswer.\n</think>\n\nIt is 18 °C and clear."
    trace = play(chat, [turn_1, turn_2], tok)
    sampled = (QWEN_SYSTEM + "<|im_start|>user\nWhat's the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"
               + turn_1 + "<|im_end|>\n<|im_start|>user\n<tool_response>\n" + RESULT + "\n</tool_response><|im_end|>\n"
               "<|im_start|>assistant\n" + turn_2 + "<|im_end|>\n<|im_start|>user\nThanks! Is that warm?<|im_end|>\n"
               "<|im_start|>assistant\n")
    assert tok.decode(trace.ids) == sampled
    fresh = tok.apply_chat_template(
        [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "What's the weather in Paris?"},
         {"role": "assistant", "content": turn_1}, {"role": "tool", "content": RESULT},
         {"role": "assistant", "content": turn_2}, {"role": "user", "content": "Thanks! Is that warm?"}],
        tools=[TOOL], tokenize=False, add_generation_prompt=True)
    assert fresh == sampled.replace("<think>\nThe user wants the weather.\n</think>\n\n", "").replace(
        "<think>\nAnswer.\n</think>\n\n", "")  # what a fresh rendering would have shown instead
    assert tok.decode([t for t, m in zip(trace.ids, trace.mask) if m]) == f"{turn_1}<|im_end|>{turn_2}<|im_end|>"


def test_qwen3_without_thinking_prefills_an_empty_think_block(family_tokenizers):
    tok = family_tokenizers["qwen3"]
    trace = play(PolicyChat(tok, thinking=False), [HERMES_CALL, "It is 18 °C."], tok)
    text = tok.decode(trace.ids)
    assert text.count("<|im_start|>assistant\n<think>\n\n</think>\n\n") == 3  # every header the policy continued from
    assert tok.decode([t for t, m in zip(trace.ids, trace.mask) if m]) == f"{HERMES_CALL}<|im_end|>It is 18 °C.<|im_end|>"


@pytest.mark.parametrize("family", ["qwen2", "llama3", "gemma2"])
def test_stable_templates_equal_a_fresh_rendering(family_tokenizers, family):
    """Templates that render earlier turns the same way: the episode's tokens are exactly the
    template applied to the whole conversation."""
    tok = family_tokenizers[family]
    chat = PolicyChat(tok)
    trace = play(chat, [HERMES_CALL, "It is 18 °C and clear."], tok)
    system = "You are a helpful assistant." + ("" if chat.native_tools else f"\n\n{hermes_tool_block([TOOL])}")
    opening = ([{"role": "system", "content": system}, {"role": "user", "content": "What's the weather in Paris?"}]
               if chat.system_role else [{"role": "user", "content": f"{system}\n\nWhat's the weather in Paris?"}])
    fresh = tok.apply_chat_template(
        [*opening,
         {"role": "assistant", "content": HERMES_CALL}, chat.tool_message("get_weather", RESULT),
         {"role": "assistant", "content": "It is 18 °C and clear."}, {"role": "user", "content": "Thanks! Is that warm?"}],
        tools=[TOOL] if chat.native_tools else None, tokenize=False, add_generation_prompt=True)
    assert tok.decode(trace.ids) == fresh  # (token ids may split differently at a segment's edge)


def test_tool_formats_per_family(family_tokenizers):
    """Hermes-native templates get tools= ; Llama's native format is not Hermes, so it gets the
    Hermes block in its system prompt, and its tool results go to the ipython role."""
    qwen3, qwen2, llama = (PolicyChat(family_tokenizers[f]) for f in ("qwen3", "qwen2", "llama3"))
    assert qwen3.native_tools and qwen2.native_tools and not llama.native_tools
    assert qwen3.tool_message("get_weather", "x") == {"role": "tool", "content": "x"}
    text = family_tokenizers["llama3"].decode(llama.first_prompt("Be useful.", "Rain?", [TOOL]))
    assert "Be useful.\n\n# Tools" in text and "<tool_call>" in text
    cont = family_tokenizers["llama3"].decode(llama.continuation([llama.tool_message("get_weather", "dry")], None))
    assert cont.startswith("<|eot_id|><|start_header_id|>ipython<|end_header_id|>\n\n")


def test_a_template_without_system_and_tool_roles(family_tokenizers):
    """Gemma 2: the system prompt goes into the first user message, and the results of one
    turn's calls go back as one user message (it refuses two user messages in a row)."""
    tok = family_tokenizers["gemma2"]
    chat = PolicyChat(tok)
    assert not chat.system_role and chat.tool_role == "user" and not chat.native_tools
    assert tok.decode(chat.first_prompt("Be useful.", "Rain?", [TOOL])).startswith("<bos><start_of_turn>user\nBe useful.\n\n# Tools")
    (message,) = chat.tool_messages([("get_weather", "dry"), ("get_weather", "wet")])
    assert message["role"] == "user" and message["content"].count("<tool_response>") == 2
    cont = tok.decode(chat.continuation([message], tok.eos_token_id))
    assert cont.startswith("\n<start_of_turn>user\n<tool_response>") and cont.endswith("<start_of_turn>model\n")
    assert chat.messages([{"role": "user", "content": "q"}, {"role": "tool", "name": "a", "content": "1"},
                          {"role": "tool", "name": "b", "content": "2"}])[1]["content"].count("<tool_response>") == 2


def test_a_template_that_cannot_continue_raises_template_error(family_tokenizers):
    tok = family_tokenizers["qwen2"]
    chat = PolicyChat(tok)
    broken = type(tok).from_pretrained(tok.name_or_path)
    broken.chat_template = tok.chat_template.replace("{%- elif m.role == 'tool' -%}", "{%- elif m.role == 'tool' -%}{{ raise_exception('no tools') }}")
    with pytest.raises(TemplateError):
        PolicyChat(broken).continuation([chat.tool_message("get_weather", "x")], None)
