"""JSON-schema-constrained decoding for the transformers backend, through llguidance.

llguidance turns a role's JSON schema into a grammar over the tokenizer's vocabulary and, at
each step, fills a bitmask of the tokens that keep the answer valid (on the CPU, a few words a
row); the row sampler unpacks it on the logits' device and masks the others before it samples.
With thinking on, a row is free until its think block closes (``</think>``), then the schema
applies to what follows, as vLLM does with a reasoning parser. llguidance is one wheel with no
dependencies (xgrammar, used before, pulls in triton: 1 GB on every Linux install, a CPU's
included) and is imported only here, when a transformers backend first gets a schema.
"""

from __future__ import annotations

import json
import logging

from trustee_lite.errors import one_line

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
    """Grammars for one tokenizer, made once per schema (fitted schemas repeat: one per role and
    token budget)."""

    def __init__(self, tokenizer, vocab_size: int, stop_ids: list[int]):
        import llguidance
        import llguidance.hf

        self.llg = llguidance
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.info = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab_size, eos_token=list(stop_ids))
        self._grammars: dict[str, str | None] = {}
        self._shifts = {}  # the bit positions 0..31 on each device the mask is applied on

    def constraint(self, schema: dict, thinking: bool | None, max_new_tokens: int) -> RowConstraint | None:
        """A fresh per-row constraint, or None (with a warning) if llguidance cannot take the
        schema: the answer is then parsed defensively, as on a backend without constraints.
        Without thinking the string bounds fit the token budget; with it, the think block's
        length is unknown, so the answer may still be cut."""
        if not thinking:
            schema = fit_to_budget(schema, max_new_tokens)
        key = json.dumps(schema, sort_keys=True)
        if key not in self._grammars:
            self._grammars[key] = self._grammar(schema)
        grammar = self._grammars[key]
        if grammar is None:
            return None
        return RowConstraint(self.llg.LLMatcher(self.info, grammar, log_level=0), self.tokenizer, after_think=bool(thinking))

    def _grammar(self, schema: dict) -> str | None:
        # Fixed separators (", " and ": "): free whitespace lets a model loop on newlines.
        options = {"item_separator": ", ", "key_separator": ": ", "whitespace_flexible": False}
        try:
            grammar = self.llg.LLMatcher.grammar_from_json_schema(json.dumps(closed(schema)), defaults=options)
            error = self.llg.LLMatcher.validate_grammar(grammar, self.info)
        except Exception as err:  # noqa: BLE001 - a schema llguidance cannot read
            error = str(err)
        if error and not error.startswith("WARNING"):
            log.warning("llguidance cannot take a schema (%s); that answer is not constrained", one_line(error)[:300])
            return None
        return grammar

    def bitmask(self, rows: int):
        """One row of 32-bit words per request, on the CPU, where the matchers write them."""
        import torch

        return torch.zeros((rows, (self.vocab_size + 31) // 32), dtype=torch.int32)

    def apply(self, logits, bitmask, rows: list[int]) -> None:
        """Set the logits of disallowed tokens to -inf, in place, for the given rows: the rows'
        words cross to the logits' device, where their bits are unpacked."""
        import torch

        device = logits.device
        if device not in self._shifts:
            self._shifts[device] = torch.arange(32, dtype=torch.int32, device=device)
        index = torch.tensor(rows, device=device)
        words = bitmask[rows].to(device)
        allowed = ((words.unsqueeze(-1) >> self._shifts[device]) & 1).flatten(1).bool()
        width = min(logits.shape[1], allowed.shape[1])
        masked = logits[index]
        masked[:, :width].masked_fill_(~allowed[:, :width], float("-inf"))
        masked[:, width:] = float("-inf")
        logits[index] = masked


def closed(schema):
    """The schema with every object that does not say otherwise closed to other keys (JSON
    Schema leaves them open; a role's answer has exactly its fields)."""
    if isinstance(schema, list):
        return [closed(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: closed(v) for k, v in schema.items()}
    if out.get("type") == "object" and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


class RowConstraint:
    """One row's grammar state. Active from the first token, or (thinking) once the generated
    text has closed its think block."""

    def __init__(self, matcher, tokenizer, after_think: bool):
        self.matcher = matcher
        self.tokenizer = tokenizer
        self.active = not after_think
        self._tail: list[int] = []

    def fill(self, bitmask, row: int) -> None:
        words = bitmask[row]
        self.matcher.unsafe_compute_mask_ptr(words.data_ptr(), words.numel() * words.element_size())

    def observe(self, token: int) -> None:
        """The token the row sampled (after the mask, when active)."""
        if self.active:
            if not self.matcher.is_stopped() and not self.matcher.is_error():
                self.matcher.consume_token(token)
            return
        self._tail = (self._tail + [token])[-16:]
        if THINK_END in self.tokenizer.decode(self._tail, skip_special_tokens=False):
            self.active = True
