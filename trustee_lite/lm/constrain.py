"""JSON-schema-constrained decoding for the transformers backend, through xgrammar.

xgrammar compiles a role's JSON schema into a grammar over the tokenizer's vocabulary and, at
each step, gives the tokens that keep the answer valid; the row sampler masks the others before
it samples. With thinking on, a row is free until its think block closes (``</think>``), then
the schema applies to what follows, as vLLM does with a reasoning parser. xgrammar runs on CPU
and CUDA and is imported only here, when a transformers backend first gets a schema.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger(__name__)

THINK_END = "</think>"
STRUCTURE_TOKENS = 24  # braces, keys, separators and the end token of a small JSON object


def fit_to_budget(schema: dict, max_new_tokens: int) -> dict:
    """The schema as the grammar enforces it: string bounds lowered in proportion so that the
    longest answer closes within `max_new_tokens` (a token is at least one character), so a
    constrained answer is never cut open. Bounds that already fit are kept; minLength wins."""
    fields = [f for f in schema.get("properties", {}).values() if f.get("type") == "string" and "maxLength" in f]
    total = sum(f["maxLength"] for f in fields)
    room = max_new_tokens - STRUCTURE_TOKENS - 4 * len(schema.get("properties", {}))
    if total <= room or not fields:
        return schema
    scale = max(room, 0) / total
    properties = {
        name: ({**f, "maxLength": max(f.get("minLength", 0), int(f["maxLength"] * scale))} if f in fields else f)
        for name, f in schema["properties"].items()
    }
    return {**schema, "properties": properties}


class SchemaCompiler:
    """Grammars for one tokenizer, compiled once per schema (xgrammar caches them)."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        import xgrammar as xgr

        self.xgr = xgr
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_ids))
        self.compiler = xgr.GrammarCompiler(info, cache_enabled=True)

    def constraint(self, schema: dict, thinking: bool | None, max_new_tokens: int) -> RowConstraint | None:
        """A fresh per-row constraint, or None (with a warning) if xgrammar cannot take the schema:
        the answer is then parsed defensively, as on a backend without constraints. Without
        thinking the string bounds fit the token budget; with it, the think block's length is
        unknown, so the answer may still be cut."""
        if not thinking:
            schema = fit_to_budget(schema, max_new_tokens)
        try:
            # Fixed separators (", " and ": "): free whitespace lets a model loop on newlines.
            grammar = self.compiler.compile_json_schema(json.dumps(schema, sort_keys=False), any_whitespace=False)
        except Exception as err:  # noqa: BLE001 - an unsupported schema feature
            log.warning("xgrammar cannot compile a schema (%s); that answer is not constrained", err)
            return None
        return RowConstraint(self.xgr.GrammarMatcher(grammar), self.tokenizer, after_think=bool(thinking))

    def bitmask(self, rows: int):
        return self.xgr.allocate_token_bitmask(rows, self.vocab_size)

    def apply(self, logits, bitmask, rows: list[int]) -> None:
        """Set the logits of disallowed tokens to -inf, in place, for the given rows."""
        self.xgr.apply_token_bitmask_inplace(logits, bitmask.to(logits.device), indices=rows)


class RowConstraint:
    """One row's grammar state. Active from the first token, or (thinking) once the generated
    text has closed its think block."""

    def __init__(self, matcher, tokenizer, after_think: bool):
        self.matcher = matcher
        self.tokenizer = tokenizer
        self.active = not after_think
        self._tail: list[int] = []

    def fill(self, bitmask, row: int) -> None:
        self.matcher.fill_next_token_bitmask(bitmask, row)

    def observe(self, token: int) -> None:
        """The token the row sampled (after the mask, when active)."""
        if self.active:
            if not self.matcher.is_terminated():
                self.matcher.accept_token(token)
            return
        self._tail = (self._tail + [token])[-16:]
        if THINK_END in self.tokenizer.decode(self._tail, skip_special_tokens=False):
            self.active = True
