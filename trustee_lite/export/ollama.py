"""The Ollama chat template (Go text/template) of an exported policy, for four families: Qwen2.5
(model_type qwen2), Qwen3, Llama 3 (3.0, and 3.1 to 3.3) and Gemma 2, told apart by the base's
model_type and chat template. Any other base gets no TEMPLATE line, and the Modelfile says so.

Each template renders what the policy was trained on, as env/chat.py builds it: the family's
chat template with the recipe's tools and thinking choice, every policy turn kept as sampled.
Qwen gets its tools through the template (its native Hermes format); Llama 3 and Gemma 2 get the
Hermes-style tool block in the system prompt (chat.hermes_tool_block; Gemma: in the first user
message) and tool results as <tool_response> blocks named after their tool (Llama 3.1: in
ipython turns, JSON-quoted). A turn's calls follow its text (after a newline, unless the text
ends with one) as the <tool_call> blocks the policy writes, inside `{{ if .ToolCalls }}`, whose
first text Ollama's parser takes as the tag it looks for in the model's output. Qwen3 with
thinking off (or a thinking-only Qwen3 template) opens every assistant turn with the think block
the prompt pre-filled in training; otherwise think blocks stay in the content as sampled. The
BOS token is left to the runner. Templates read only .Messages and .Tools (Ollama renders chats
and generate requests through them), with `json`, Ollama's one function, and a message's
ToolName (Ollama's tool_name; a result without one takes the name of its call).

What they cannot reproduce (tests/test_ollama_template.py renders them with Go's text/template
against transformers' rendering of the family's template and measures the rest): JSON comes from
Ollama's `json` (Go's encoding/json: compact, Ollama's key order, < > & escaped) where the policy
saw Python's json.dumps, so tool schemas and call arguments carry the same values in other
spacing; Llama 3 and Gemma 2 do not trim message text; the tool block's example call fills each
required argument with "..." (training: a placeholder of the argument's type) and none when none
is required; Llama 3.2/3.3 templates render the day of rendering where these write 26 Jul 2024;
Ollama merges consecutive messages of one role before rendering."""

from __future__ import annotations

import json
import re
from pathlib import Path

FAMILIES = "Qwen2.5, Qwen3, Llama 3 and Gemma 2"
STOPS = {"qwen2": ("<|im_start|>", "<|im_end|>"), "qwen3": ("<|im_start|>", "<|im_end|>"),
         "llama3": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
         "llama3.1": ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
         "gemma2": ("<start_of_turn>", "<end_of_turn>")}

# --- Go template pieces. Inside `range $i, $m := .Messages` the dot is the message.
LAST = '{{- $last := eq (len (slice $.Messages $i)) 1 }}'
NEXT_TOOL = '(and (not $last) (eq (index (slice $.Messages $i) 1).Role "tool"))'
FIRST_SYSTEM = ('{{- if and .Messages (eq (index .Messages 0).Role "system") }}{{ $sys = (index .Messages 0).Content }}'
                '{{ $hasSys = true }}{{ end }}')
# The turn's text, a newline unless the text ends with one, then its calls as Hermes blocks one
# a line (the first text inside `if .ToolCalls` is Ollama's tag: nothing may come before
# <tool_call> there, and `$m.ToolCalls` elsewhere keeps other ifs from being taken for it).
CALLS = ('{{ .Content }}{{ if and $m.ToolCalls .Content (ne (slice .Content (len (slice .Content 1))) "\\n") }}'
         '\n{{ end }}{{ if .ToolCalls }}{{ range $j, $c := .ToolCalls }}'
         '<tool_call>\n{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}\n</tool_call>'
         '{{ if ne (len (slice $m.ToolCalls $j)) 1 }}\n{{ end }}{{ end }}{{ end }}')
# chat.hermes_tool_block: the tools one compact JSON a line, an example call of the first tool.
HERMES_BLOCK = (
    "# Tools\n\nYou can call these functions. Each line inside <tools></tools> is one function's JSON schema:\n"
    "<tools>\n{{ range $j, $t := $.Tools }}{{ if $j }}\n{{ end }}{{ json $t.Function }}{{ end }}\n</tools>\n\n"
    "To call a function, write a tool_call block with its name and arguments as JSON, one block per call:\n"
    '{{ with index $.Tools 0 }}<tool_call>\n{"name": {{ printf "%q" .Function.Name }}, "arguments": {{ "{" }}'
    '{{ range $k, $r := .Function.Parameters.Required }}{{ if $k }}, {{ end }}{{ printf "%q" $r }}: "..."{{ end }}}}'
    "\n</tool_call>{{ end }}")
# A tool result's name: its tool_name, else the name of the matching call of the turn before.
TOOL_NAME = ('{{ $name := .ToolName }}{{ if and (not $name) $pending }}{{ $name = (index $pending 0).Function.Name }}'
             '{{ end }}{{ if $pending }}{{ $pending = slice $pending 1 }}{{ end }}')
RESPONSE = '"<tool_response>\\n{\\"name\\": %q, \\"content\\": %q}\\n</tool_response>"'  # a Go string literal

QWEN_TOOLS = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{{- range .Tools }}\n{{ json . }}\n{{- end }}\n</tools>\n\n"
    "For each function call, return a json object with function name and arguments within "
    '<tool_call></tool_call> XML tags:\n<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call>")


def _qwen(default_system: str | None, prefill: str) -> str:
    start = (f'{{{{- $sys := {json.dumps(default_system)} }}}}{{{{ $hasSys := true }}}}' if default_system is not None
             else '{{- $sys := "" }}{{ $hasSys := false }}')
    return (
        start + FIRST_SYSTEM +
        "{{- if .Tools }}<|im_start|>system\n{{ if $hasSys }}{{ $sys }}\n\n{{ end }}" + QWEN_TOOLS + "<|im_end|>\n"
        "{{ else if $hasSys }}<|im_start|>system\n{{ $sys }}<|im_end|>\n{{ end }}"
        '{{- $prev := "" }}{{- range $i, $m := .Messages }}' + LAST +
        '{{- if eq .Role "system" }}{{ if $i }}<|im_start|>system\n{{ .Content }}<|im_end|>\n{{ end }}'
        '{{- else if eq .Role "assistant" }}<|im_start|>assistant\n' + prefill + CALLS +
        "{{ if not $last }}<|im_end|>\n{{ end }}"
        '{{- else if eq .Role "tool" }}{{ if ne $prev "tool" }}<|im_start|>user{{ end }}\n<tool_response>\n'
        "{{ .Content }}\n</tool_response>{{ if not " + NEXT_TOOL + " }}<|im_end|>\n{{ end }}"
        "{{- else }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}"
        "{{- $prev = .Role }}{{- end }}"
        '{{- if ne $prev "assistant" }}<|im_start|>assistant\n' + prefill + "{{ end }}")


def _llama(header: bool) -> str:
    """Llama 3.1-3.3 (`header`: the knowledge and date lines, tool results in ipython turns as a
    JSON string) or Llama 3.0 (every message a plain turn)."""
    turn = "<|start_header_id|>{role}<|end_header_id|>\n\n"
    system = (turn.format(role="system") + "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
              if header else "{{ if or $hasSys .Tools }}" + turn.format(role="system"))
    tool = (turn.format(role="ipython") + "{{ printf \"%q\" (printf " + RESPONSE + " $name .Content) }}" if header else
            turn.format(role="tool") + '<tool_response>\n{"name": {{ printf "%q" $name }}, "content": '
            '{{ printf "%q" .Content }}}\n</tool_response>')
    return (
        '{{- $sys := "" }}{{ $hasSys := false }}' + FIRST_SYSTEM + system +
        "{{ $sys }}{{ if .Tools }}{{ if $sys }}\n\n{{ end }}" + HERMES_BLOCK + "{{ end }}<|eot_id|>" +
        ("" if header else "{{ end }}") +
        '{{- $prev := "" }}{{ $pending := false }}{{- range $i, $m := .Messages }}' + LAST +
        '{{- if eq .Role "system" }}{{ if $i }}' + turn.format(role="system") + "{{ .Content }}<|eot_id|>{{ end }}"
        '{{- else if eq .Role "assistant" }}' + turn.format(role="assistant") + CALLS +
        "{{ if not $last }}<|eot_id|>{{ end }}{{ $pending = $m.ToolCalls }}"
        '{{- else if eq .Role "tool" }}' + TOOL_NAME + tool + "<|eot_id|>"
        "{{- else }}" + turn.format(role="{{ .Role }}") + "{{ .Content }}<|eot_id|>{{ end }}"
        "{{- $prev = .Role }}{{- end }}"
        '{{- if ne $prev "assistant" }}' + turn.format(role="assistant") + "{{ end }}")


def _gemma() -> str:
    """No system role (the system prompt and tool block open the first user message), no tool
    role (a turn's results are one user message), the assistant speaks as 'model'."""
    return (
        '{{- $prev := "" }}{{ $pending := false }}{{ $first := true }}{{- range $i, $m := .Messages }}' + LAST +
        '{{- if eq .Role "system" }}'
        '{{- else if eq .Role "assistant" }}<start_of_turn>model\n' + CALLS +
        "{{ if not $last }}<end_of_turn>\n{{ end }}{{ $pending = $m.ToolCalls }}"
        '{{- else if eq .Role "tool" }}' + TOOL_NAME +
        '{{ if ne $prev "tool" }}<start_of_turn>user\n{{ else }}\n{{ end }}'
        '<tool_response>\n{"name": {{ printf "%q" $name }}, "content": {{ printf "%q" .Content }}}\n</tool_response>'
        "{{ if not " + NEXT_TOOL + " }}<end_of_turn>\n{{ end }}"
        "{{- else }}<start_of_turn>{{ .Role }}\n{{ if $first }}{{ if $.System }}{{ $.System }}\n\n{{ end }}"
        "{{ if $.Tools }}" + HERMES_BLOCK + "\n\n{{ end }}{{ $first = false }}{{ end }}"
        "{{ .Content }}<end_of_turn>\n{{ end }}"
        '{{- if ne .Role "system" }}{{ $prev = .Role }}{{ end }}{{- end }}'
        '{{- if ne $prev "assistant" }}<start_of_turn>model\n{{ end }}')


QWEN2_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
# A thinking-only Qwen3 template (the -Thinking-2507 models): its generation prompt opens the block.
THINK_OPEN = re.compile(r"add_generation_prompt\s*-?%}\s*{{-?\s*'<\|im_start\|>assistant\\n<think>\\n'")


def family(model_type: str, chat_template: str | None) -> tuple[str | None, str]:
    """The family key (a STOPS key) of a base with this config model_type (or GGUF architecture)
    and chat template, or None and why not."""
    t = chat_template or ""
    kind = model_type or "unknown"
    if not t:
        return None, f"model_type {kind} without a chat template"
    if kind == "qwen2" and "<|im_start|>" in t and "<tool_call>" in t and QWEN2_SYSTEM in t:  # not QwQ, not R1 distills
        return "qwen2", "Qwen2.5"
    if kind in ("qwen3", "qwen3_moe", "qwen3moe") and "<|im_start|>" in t and "<tool_call>" in t:
        return "qwen3", "Qwen3"
    if kind == "llama" and "<|start_header_id|>" in t and "<|eot_id|>" in t:
        return ("llama3.1", "Llama 3.1-3.3") if "Cutting Knowledge Date" in t else ("llama3", "Llama 3")
    if kind == "gemma2" and "<start_of_turn>" in t:
        return "gemma2", "Gemma 2"
    own = {"qwen2": "Qwen2.5's", "qwen3": "Qwen3's", "qwen3_moe": "Qwen3's", "qwen3moe": "Qwen3's", "llama": "Llama 3's",
           "gemma2": "Gemma 2's"}.get(kind)
    return None, f"model_type {kind}" + (f", but a chat template other than {own}" if own else "")


def template_for(model_type: str, chat_template: str | None, thinking: bool | None = None) -> tuple[str | None, str]:
    """The Go template for a base (its model_type and chat template) and the recipe's thinking
    choice, or None; with a one-line reason naming the family."""
    key, name = family(model_type, chat_template)
    if key is None:
        return None, name
    if key == "qwen2":
        return _qwen(QWEN2_SYSTEM, ""), name
    if key == "qwen3":
        if THINK_OPEN.search(chat_template):
            return _qwen(None, "<think>\n"), f"{name} (thinking-only: each assistant turn opens a think block)"
        if thinking is False and "enable_thinking" in chat_template:
            reason = f"{name}, thinking off (an empty think block opens each turn)"
            return _qwen(None, "<think>\n\n</think>\n\n"), reason
        return _qwen(None, ""), name + ("" if "enable_thinking" not in chat_template else ", thinking on")
    if key.startswith("llama3"):
        return _llama(header=key == "llama3.1"), name
    return _gemma(), name


def modelfile_lines(policy) -> list[str]:
    """The Modelfile's chat lines for the policy: a comment naming the family, its stop tokens
    and TEMPLATE, or one comment saying why there is none."""
    try:
        model_type, chat_template = base_facts(policy)
    except (OSError, ValueError, KeyError) as err:
        model_type, chat_template = "", None
        why = "the base's chat template could not be read: " + (str(err).splitlines() or [type(err).__name__])[0]
    else:
        why = None
    text, reason = template_for(model_type, chat_template, policy.thinking)
    if text is None:
        return [f"# no TEMPLATE ({why or reason}): Ollama then picks one from the base GGUF's chat template (not "
                f"checked here); trustee_lite writes one only for {FAMILIES}"]
    assert '"""' not in text  # a Modelfile's triple-quoted value ends at the first """
    key, _ = family(model_type, chat_template)
    return [f"# TEMPLATE: {reason}, as trustee_lite trained the policy (tools, tool calls and results included)",
            *(f'PARAMETER stop "{s}"' for s in STOPS[key]), f'TEMPLATE """{text}"""']


def base_facts(policy) -> tuple[str, str | None]:
    """The model_type and chat template of the policy's base, read from its files without loading
    it: a local folder or a cached hub id (config.json, chat_template.jinja or
    tokenizer_config.json), or a GGUF file (the converted copy when there is one, else the
    file's own metadata: general.architecture, tokenizer.chat_template)."""
    from trustee_lite.lm import converted
    from trustee_lite.lm.models import locate

    location = locate(policy)
    if location.gguf_path is not None:
        copy = converted.any_copy(location.gguf_path)
        return gguf_facts(location.gguf_path) if copy is None else folder_facts(str(copy))
    return folder_facts(location.source)


def folder_facts(source: str) -> tuple[str, str | None]:
    from transformers.utils.hub import cached_file

    def read(name: str) -> str | None:
        path = cached_file(source, name, local_files_only=True, _raise_exceptions_for_missing_entries=False,
                           _raise_exceptions_for_connection_errors=False)
        return Path(path).read_text(encoding="utf-8") if path else None

    config = read("config.json")
    model_type = json.loads(config).get("model_type", "") if config else ""
    template = read("chat_template.jinja")
    if template is None and (tokenizer := read("tokenizer_config.json")) is not None:
        template = json.loads(tokenizer).get("chat_template")
        if isinstance(template, list):  # named templates: the default one
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return model_type, template


def gguf_facts(path: Path) -> tuple[str, str | None]:
    from gguf import GGUFReader

    fields = GGUFReader(str(path)).fields
    arch, template = fields.get("general.architecture"), fields.get("tokenizer.chat_template")
    return (arch.contents() if arch else ""), (template.contents() if template else None)
