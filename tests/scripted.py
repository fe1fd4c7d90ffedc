"""A scripted backend for tests that need deterministic model answers (never in the package).

It implements the package's Backend interface (lm/base.py): each request is answered by a test-supplied
function. Policy requests (prompt ids) get their text tokenized with a real tokenizer, so the
trajectory's token bookkeeping is exercised for real.
"""

from __future__ import annotations

from typing import Callable

from trustee_lite.lm.base import Backend, Completion, GenerationError, GenRequest


def role_of(request: GenRequest) -> str:
    """Which simulator role a request is for, read from its JSON schema's fields ("task_completer":
    the task generator completing a task from the user's file)."""
    fields = set((request.json_schema or {}).get("properties", {}))
    for role, marker in (("task_generator", "first_user_query"), ("task_completer", "user_intent"),
                         ("task_completer", "user_persona"), ("task_completer", "expected_tool_calls"),
                         ("user_simulator", "response"),
                         ("tool_simulator", "result"), ("verifier", "reasoning")):
        if marker in fields:
            return role
    return "policy"


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self, answer: Callable[[GenRequest], str | Exception], tokenizer=None, max_batch: int = 16,
                 model_id: str = "scripted-1"):
        self.answer = answer
        self.tokenizer = tokenizer
        self.max_batch = max_batch
        self.model_id = model_id
        self.batches: list[list[GenRequest]] = []

    def batch_key(self, request: GenRequest) -> tuple:
        return (request.adapter,)

    def generate_batch(self, requests):
        self.batches.append(list(requests))
        return [self._one(r) for r in requests]

    def _one(self, request: GenRequest):
        text = self.answer(request)
        if isinstance(text, Exception):
            return GenerationError(str(text))
        if request.prompt_ids is None or self.tokenizer is None:
            return Completion(text=text, num_tokens=max(1, len(text) // 4), prompt_tokens=0, finish_reason="stop")
        eos = self.tokenizer.eos_token_id
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"][: request.sampling.max_new_tokens]
        stopped = len(ids) < request.sampling.max_new_tokens
        ids = ids + [eos] if stopped else ids
        return Completion(
            text=self.tokenizer.decode(ids[:-1] if stopped else ids), num_tokens=len(ids),
            prompt_tokens=len(request.prompt_ids), finish_reason="stop" if stopped else "length",
            token_ids=tuple(ids), ended_with_eos=stopped, logprobs=tuple(-0.5 for _ in ids),
        )
