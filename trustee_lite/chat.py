"""The policy's conversation as exact token ids, rendered with the policy's own chat template.

The first prompt is rendered whole. After each policy turn, only the *continuation* is rendered
and tokenized (the template's end of the assistant turn, the new tool/user messages, the next
assistant header), so the policy's generated tokens are kept exactly as sampled and every
other token is marked as not the policy's. Templates that know ``tools=`` get the schemas that
way; others get a Hermes-style tool block in the system prompt.
"""

from __future__ import annotations

import json
from typing import Any

from .env.role import tools_json
from .toolcalls import format_call

_MARK = "\u2063TRUSTEE\u2063"  # placeholder assistant content, never in real text


def hermes_tool_block(tools) -> str:
    """Tool instructions for templates without native tool support (Hermes-style tags)."""
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

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        template = tokenizer.chat_template or ""
        if not template:
            raise ValueError("the policy tokenizer has no chat template")
        self.native_tools = "tools" in template
        self.tool_role = "tool" if self._renders([{"role": "tool", "content": "x"}]) else "user"
        self.system_role = self._renders_system()
        base = [{"role": "user", "content": "."}, {"role": "assistant", "content": _MARK}]
        self._base_text = self._render(base, add_generation_prompt=False)
        # What the template writes after an assistant message's content (e.g. "<|im_end|>\n").
        self._closer = self._base_text[self._base_text.rindex(_MARK) + len(_MARK):]
        self._base = base

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
        return self.encode(self._render(messages, add_generation_prompt=True, tools=tools))

    def continuation(self, messages: list[dict[str, str]], last_token: int | None) -> list[int]:
        """Token ids that follow a policy turn: its closing, the new messages, the next header.
        If the turn's last token (``last_token``) already is the closing's first, it is not repeated."""
        full = self._render(self._base + messages, add_generation_prompt=True)
        if not full.startswith(self._base_text):
            raise ValueError("the chat template does not render conversations incrementally")
        ids = self.encode(self._closer + full[len(self._base_text):])
        if ids and ids[0] == last_token:
            ids = ids[1:]
        return ids

    def tool_message(self, name: str | None, result: str) -> dict[str, str]:
        if self.native_tools and self.tool_role == "tool":
            return {"role": "tool", "content": result}
        payload = json.dumps({"name": name, "content": result}, ensure_ascii=False)
        return {"role": self.tool_role, "content": f"<tool_response>\n{payload}\n</tool_response>"}

    @staticmethod
    def user_message(text: str) -> dict[str, str]:
        return {"role": "user", "content": text}

    def _render(self, messages, add_generation_prompt: bool, tools: Any = None) -> str:
        kwargs = {"tools": list(tools)} if (tools is not None and self.native_tools) else {}
        return self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
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
