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
CLOSING_TOKENS = 4  # the braces and the end-of-turn token


def fit_to_budget(schema: dict, max_new_tokens: int) -> dict:
    """The schema with string bounds lowered in proportion so that its longest answer closes
    within `max_new_tokens`, counting a token as at least one character: the keys, separators
    and fixed parts (enums, arrays of enums) at their longest, the strings at their bounds.
    Bounds that already fit are kept; minLength wins. Validation keeps the role's own schema:
    a fitted answer is always valid for it."""
    properties = schema.get("properties", {})
    strings = {n: f for n, f in properties.items() if f.get("type") == "string" and "maxLength" in f}
    fixed = sum(len(name) + 6 + (0 if name in strings else _longest(f)) for name, f in properties.items())
    room = max_new_tokens - CLOSING_TOKENS - fixed
    total = sum(f["maxLength"] for f in strings.values())
    if total <= room or not strings:
        return schema
    scale = max(room, 0) / total
    fitted = {n: {**f, "maxLength": max(f.get("minLength", 0), int(f["maxLength"] * scale))} for n, f in strings.items()}
    return {**schema, "properties": {n: fitted.get(n, f) for n, f in properties.items()}}


def _longest(field: dict) -> int:
    """The longest JSON text a fixed-size field can take (an enum, an array of enum values)."""
    if "enum" in field:
        return max(len(json.dumps(v, ensure_ascii=False)) for v in field["enum"])
    if field.get("type") == "array" and "enum" in field.get("items", {}):
        return 2 + field.get("maxItems", 1) * (_longest(field["items"]) + 2)
    return 8  # a number or a boolean


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
