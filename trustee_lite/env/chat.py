"""The policy's conversation as exact token ids, rendered with the policy's own chat template.

The first prompt is rendered whole. After each policy turn the sampled tokens stay in the
context exactly as sampled, and only the new messages are rendered and appended at the token
level after them (the template's end of the assistant turn, the tool/user messages, the next
assistant header), as the reference implementation's agent loop does. So the tokens trained are
the tokens sampled, in the context they were sampled in. Templates that re-render earlier turns
differently (Qwen3 drops the think block of every assistant turn before the last user query)
therefore see their earlier turns as the policy wrote them, think blocks included, where a fresh
rendering of the whole conversation would not: the context is the one the policy really had.

Templates whose native tool format is Hermes-style (``<tool_call>`` in the template: Qwen2.5,
Qwen3, Hermes) get the schemas through ``tools=``; every other template (SmolLM2, Llama 3,
...) gets a Hermes-style tool block in the system prompt, so one parser reads every policy.
"""

from __future__ import annotations

import json
from typing import Any

from trustee_lite.env.role import tools_json
from trustee_lite.env.toolcalls import OPEN, format_call
from trustee_lite.lm.base import template_kwargs

_MARK = "\u2063TRUSTEE\u2063"  # placeholder assistant content, never in real text


class TemplateError(ValueError):
    """The chat template cannot render a conversation this way; the episode aborts with
    `template_error` (never the run)."""

    reason = "template_error"


def hermes_tool_block(tools) -> str:
    """Tool instructions for templates without native Hermes-style tool support."""
    example = format_call(*example_call(tools[0])) if tools else format_call("tool_name", {"argument": "value"})
    return (
        "# Tools\n\nYou can call these functions. Each line inside <tools></tools> is one "
        f"function's JSON schema:\n<tools>\n{tools_json(tools)}\n</tools>\n\n"
        "To call a function, write a tool_call block with its name and arguments as JSON, "
        f"one block per call:\n{example}"
    )


PLACEHOLDER = {"string": "...", "integer": 1, "number": 1.0, "boolean": True, "array": [], "object": {}}


def example_call(tool: dict) -> tuple[str, dict]:
    """A call of one of the task's own tools, required arguments filled with placeholders of
    their type: small models copy a concrete example far more reliably than a generic one."""
    function = tool["function"]
    params = function.get("parameters") or {}
    props = params.get("properties") or {}
    args = {}
    for name in params.get("required") or list(props)[:1]:
        kind = (props.get(name) or {}).get("type", "string")
        args[name] = PLACEHOLDER.get(kind if isinstance(kind, str) else "string", "...")
    return function["name"], args


class PolicyChat:
    """Renders the policy side of an episode with the tokenizer's chat template."""

    def __init__(self, tokenizer, thinking: bool | None = None):
        self.tokenizer = tokenizer
        template = tokenizer.chat_template or ""
        if not isinstance(template, str) or not template:
            raise TemplateError("the policy tokenizer has no chat template")
        self.kwargs = template_kwargs(template, thinking)
        self.native_tools = "tools" in template and OPEN in template
        self.tool_role = "tool" if self._renders([{"role": "tool", "content": "x"}]) else "user"
        self.system_role = self._renders_system()
        self._base = [{"role": "user", "content": "."}, {"role": "assistant", "content": _MARK}]

    def encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def first_prompt(self, system: str, query: str, tools) -> list[int]:
        """Token ids of the system prompt (with tools) and the first user query, ready to generate."""
        return self.prompt(system, [self.user_message(query)], tools)

    def prompt(self, system: str, messages: list[dict[str, str]], tools) -> list[int]:
        """Token ids of the system prompt (with tools) and a conversation, ready to generate."""
        if not self.native_tools:
            system = f"{system}\n\n{hermes_tool_block(tools)}"
        if self.system_role:
            messages = [{"role": "system", "content": system}, *messages]
        else:
            first = messages[0]
            messages = [{**first, "content": f"{system}\n\n{first['content']}"}, *messages[1:]]
        try:
            text = self._render(messages, add_generation_prompt=True, tools=tools)
        except Exception as err:  # jinja2 TemplateError or the template's raise_exception()
            raise TemplateError(f"the chat template cannot render the first prompt: {err}") from None
        return self.encode(text)

    def continuation(self, messages: list[dict[str, str]], last_token: int | None) -> list[int]:
        """Token ids that follow a policy turn: its closing, the new messages, the next header.
        Rendered after a placeholder assistant turn and cut at its end, so nothing depends on
        how the template would re-render earlier turns. If the turn's last token
        (``last_token``) already is the closing's first, it is not repeated."""
        try:
            full = self._render(self._base + list(messages), add_generation_prompt=True)
        except Exception as err:  # jinja2 TemplateError or the template's raise_exception()
            raise TemplateError(f"the chat template cannot render {[m['role'] for m in messages]}: {err}") from None
        if full.count(_MARK) != 1:
            raise TemplateError("the chat template does not render assistant messages as written")
        ids = self.encode(full[full.index(_MARK) + len(_MARK):])
        if ids and ids[0] == last_token:
            ids = ids[1:]
        return ids

    def tool_message(self, name: str | None, result: str) -> dict[str, str]:
        return self.tool_messages([(name, result)])[0]

    def tool_messages(self, results: list[tuple[str | None, str]]) -> list[dict[str, str]]:
        """The results of one turn's calls: one tool message each, or, for a template without a
        tool role (Gemma), one user message holding every result (such templates refuse two
        user messages in a row)."""
        if self.native_tools and self.tool_role == "tool":
            return [{"role": "tool", "content": result} for _, result in results]
        blocks = [f"<tool_response>\n{json.dumps({'name': n, 'content': r}, ensure_ascii=False)}\n</tool_response>"
                  for n, r in results]
        if self.tool_role == "tool":
            return [{"role": "tool", "content": b} for b in blocks]
        return [{"role": "user", "content": "\n".join(blocks)}]

    def messages(self, messages: list[dict]) -> list[dict[str, str]]:
        """A conversation with tool results as {"role": "tool", "name", "content"}, in this
        template's form (consecutive results grouped where it has no tool role)."""
        out: list[dict[str, str]] = []
        pending: list[tuple[str | None, str]] = []
        for m in [*messages, None]:
            if m is not None and m["role"] == "tool":
                pending.append((m.get("name"), m["content"]))
                continue
            if pending:
                out += self.tool_messages(pending)
                pending = []
            if m is not None:
                out.append({"role": m["role"], "content": m["content"]})
        return out

    @staticmethod
    def user_message(text: str) -> dict[str, str]:
        return {"role": "user", "content": text}

    def _render(self, messages, add_generation_prompt: bool, tools: Any = None) -> str:
        kwargs = {"tools": list(tools)} if (tools is not None and self.native_tools) else {}
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs, **self.kwargs
        )

    def _renders(self, extra) -> bool:
        try:
            self._render([{"role": "user", "content": "."}, {"role": "assistant", "content": "."}, *extra], False)
            return True
        except Exception:  # jinja2 TemplateError, or a template's raise_exception(): the role is refused
            return False

    def _renders_system(self) -> bool:
        try:
            self._render([{"role": "system", "content": "."}, {"role": "user", "content": "."}], True)
            return True
        except Exception:
            return False


class TokenTrace:
    """The growing token sequence of a conversation as the policy saw it: the first prompt, each
    turn's sampled tokens (mask 1, with their log-probs), and the rendered continuations (mask 0)."""

    def __init__(self, chat: PolicyChat, prompt: list[int]):
        self.chat = chat
        self.ids, self.mask, self.logprobs = list(prompt), [0] * len(prompt), [0.0] * len(prompt)
        self._last: int | None = None

    def add_policy(self, token_ids, logprobs=None) -> None:
        token_ids = list(token_ids)
        self.ids += token_ids
        self.mask += [1] * len(token_ids)
        self.logprobs += list(logprobs) if logprobs else [0.0] * len(token_ids)
        self._last = token_ids[-1] if token_ids else None

    def add_messages(self, messages: list[dict[str, str]]) -> None:
        """The messages after the last policy turn, up to the next assistant header."""
        ids = self.chat.continuation(messages, last_token=self._last)
        self.ids += ids
        self.mask += [0] * len(ids)
        self.logprobs += [0.0] * len(ids)
