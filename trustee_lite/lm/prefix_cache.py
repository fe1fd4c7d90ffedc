"""Key/value reuse across policy turns: a turn's prompt starts with the previous turn's prompt and
its generated tokens, so their keys and values need not be computed again.

The cache keeps, per sequence it has seen, the keys and values of its tokens (one tensor of
shape [layers, 2, kv_heads, tokens, head_dim]); a new prompt takes the longest stored prefix it
shares with any entry (its own episode's last turn, or the system prompt and tools of another)
and feeds the model only the rest. Entries are dropped least recently used first, past a
memory budget, and all at once when the weights change (a training update).

A batch keeps its usual layout (rows left-padded to the longest prompt) and feeds every row the
same number of last slots, as many as the row with the most new tokens needs: the slots before
are the cache, where each row's kept keys and values sit (a row with fewer new tokens encodes
a few of its kept tokens again; padding slots hold zeros, hidden by the attention mask).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


def common_prefix(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    """Length of the longest common prefix of two token tuples (binary search on C-speed slice
    comparisons)."""
    low, high = 0, min(len(a), len(b))
    while low < high:
        mid = (low + high + 1) // 2
        if a[:mid] == b[:mid]:
            low = mid
        else:
            high = mid - 1
    return low


@dataclass
class Reuse:
    """What one row takes from the cache: the first `tokens` of `kv` (None: nothing)."""

    kv: object = None
    tokens: int = 0


class PrefixCache:
    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.entries: OrderedDict[tuple[int, ...], object] = OrderedDict()  # least recently used first
        self.bytes = 0

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, ids: tuple[int, ...], min_tokens: int = 1) -> Reuse:
        """The longest stored prefix of `ids`, at most len(ids) - 1 tokens (the model must be fed
        at least one token to give the next token's logits); nothing under `min_tokens`."""
        best, best_key = 0, None
        for key in self.entries:
            if key[0] != ids[0]:
                continue
            n = common_prefix(key, ids)
            if n > best:
                best, best_key = n, key
        best = min(best, len(ids) - 1)
        if best_key is None or best < min_tokens:
            return Reuse()
        self.entries.move_to_end(best_key)
        return Reuse(self.entries[best_key], best)

    def store(self, ids: tuple[int, ...], kv) -> None:
        """Keep `kv` (the keys and values of `ids`); an entry that is a prefix of `ids` is now
        redundant and goes; then the least recently used go until the budget holds."""
        size = kv.numel() * kv.element_size()
        if not ids or size > self.budget:
            return
        for key in [k for k in self.entries if len(k) <= len(ids) and ids[: len(k)] == k]:
            self._drop(key)
        self.entries[ids] = kv
        self.bytes += size
        while self.bytes > self.budget:
            self._drop(next(iter(self.entries)))

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def _drop(self, key) -> None:
        kv = self.entries.pop(key)
        self.bytes -= kv.numel() * kv.element_size()


def batch_cache(reuses: list[Reuse], width: int, make_cache):
    """A transformers cache holding every row's reused keys and values, right-aligned in a
    block of `width` slots (zeros in the padding slots, which the attention mask hides). Built
    a layer at a time, so the copy made along the way is one layer's, not the whole cache's."""
    import torch

    sample = next(r.kv for r in reuses if r.kv is not None)
    layers, _, heads, _, dim = sample.shape
    cache = make_cache()
    for layer in range(layers):
        keys, values = (torch.zeros((len(reuses), heads, width, dim), dtype=sample.dtype, device=sample.device)
                        for _ in range(2))
        for row, reuse in enumerate(reuses):
            if reuse.tokens:
                keys[row, :, width - reuse.tokens:] = reuse.kv[layer, 0, :, : reuse.tokens]
                values[row, :, width - reuse.tokens:] = reuse.kv[layer, 1, :, : reuse.tokens]
        cache.update(keys, values, layer)
    return cache


def row_kv(cache, row: int, slots):
    """One row's keys and values at `slots` (a tensor of positions), from every layer of a
    transformers cache: [layers, 2, kv_heads, len(slots), head_dim]."""
    import torch

    return torch.stack([
        torch.stack([layer.keys[row].index_select(1, slots), layer.values[row].index_select(1, slots)])
        for layer in cache.layers
    ])
