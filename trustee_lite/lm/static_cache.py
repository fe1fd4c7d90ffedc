"""Compiled decoding for the transformers backend: static key/value caches in batch buckets.

transformers' `generate` compiles the forward of its decode steps (torch.compile; CUDA graphs on
a GPU, its "reduce-overhead" mode) when it is handed a static cache and a compile config. A static
cache has a fixed shape, so each shape compiles once: a batch of n rows runs in the smallest
bucket of at least n rows (1, 2, 4, ... up to the backend's batch size), padded with rows that end
at their first token. Every bucket's cache is a view of the first rows of the largest bucket's,
so all buckets together take the memory of the largest alone: batch size x `tokens` slots.

A graph compiles once per bucket and adapter state (on for the policy, off for the simulator
roles); the LoRA update changes the adapter's weights in place, which a compiled graph reads as
inputs, so training never recompiles it.
"""

from __future__ import annotations

import contextlib
import logging

log = logging.getLogger(__name__)


def bucket_sizes(max_rows: int) -> tuple[int, ...]:
    """Powers of two below `max_rows`, then `max_rows` itself: (1, 2, 4, 8, 12) for 12."""
    sizes = [1]
    while sizes[-1] * 2 < max_rows:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_rows:
        sizes.append(max_rows)
    return tuple(sizes)


def bucket_for(rows: int, sizes: tuple[int, ...]) -> int:
    """The smallest bucket that holds `rows`."""
    for size in sizes:
        if size >= rows:
            return size
    raise ValueError(f"{rows} rows exceed the largest bucket ({sizes[-1]})")


class StaticCaches:
    """The static caches of one model: one per bucket, each the first rows of the largest.

    The largest allocates its tensors at its first use (the first batch of any size, since the
    smaller ones view it), then they stay: `tokens` slots a row, prompt and new tokens together.
    """

    def __init__(self, model_config, tokens: int, max_rows: int):
        self.config = model_config
        self.tokens = tokens
        self.sizes = bucket_sizes(max_rows)
        self._caches: dict[int, object] = {}

    def take(self, rows: int):
        """(bucket, cache) for a batch of `rows`, emptied; call inside `torch.inference_mode()`
        (the cache's tensors are made there)."""
        bucket = bucket_for(rows, self.sizes)
        cache = self._caches.get(bucket)
        if cache is None:
            cache = self._caches[bucket] = self._make(bucket)
        cache.reset()
        return bucket, cache

    def _make(self, rows: int):
        from transformers import StaticCache

        cache = StaticCache(config=self.config, max_cache_len=self.tokens)
        largest = self.sizes[-1]
        if rows == largest:
            return cache
        if largest not in self._caches:
            self._caches[largest] = self._make(largest)
        full = self._caches[largest]
        for layer, backing in zip(cache.layers, full.layers):
            layer.lazy_initialization = _as_rows_of(layer, backing, rows, largest)
        return cache


def _as_rows_of(layer, backing, rows: int, largest: int):
    """A replacement for `layer`'s lazy initialisation: it sets everything the layer's own would
    from the first keys and values it sees, on zero-sized tensors (no memory), then points the
    layer at the first `rows` rows of `backing` (allocated first if it is not yet)."""
    init = type(layer).lazy_initialization

    def initialise(key_states, value_states):
        import torch

        if not backing.is_initialized:
            shape = (largest, key_states.shape[1], 0)
            type(backing).lazy_initialization(backing, key_states.new_zeros(shape + key_states.shape[3:]),
                                              value_states.new_zeros(shape + value_states.shape[3:]))
        init(layer, key_states[:, :0], value_states[:, :0])
        layer.num_heads = key_states.shape[1]
        layer.keys, layer.values = backing.keys[:rows], backing.values[:rows]
        if not torch.compiler.is_compiling():
            torch._dynamo.mark_static_address(layer.keys)
            torch._dynamo.mark_static_address(layer.values)

    return initialise


def compile_config(device: str):
    """How generate compiles the decode step: one graph per shape (no dynamic shapes: a bucket is
    a shape), CUDA graphs on a GPU; graph breaks allowed (a quantised kernel may need one)."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead")
    config._compile_all_devices = device != "cuda"  # transformers compiles on CUDA alone unless told
    return config


def allow_recompiles(graphs: int) -> None:
    """torch.compile keeps 8 graphs of a function by default, then runs it eager: room for every
    bucket in both adapter states."""
    import torch

    limit = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = max(limit, graphs)
    torch._dynamo.config.accumulated_recompile_limit = max(torch._dynamo.config.accumulated_recompile_limit,
                                                           4 * graphs)


@contextlib.contextmanager
def quantised_compile(model):
    """transformers (5.x) marks bitsandbytes 4-bit models as not compilable (its quantizers'
    default), so generate would decode them eager; bitsandbytes since 0.46 registers its 4-bit
    kernels as torch ops made for torch.compile. Inside this block, generate may compile such a
    model; if compiling fails, the backend goes back to eager for good and says so."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    quantizer = getattr(inner, "hf_quantizer", None)
    if quantizer is None or quantizer.is_compileable:
        yield
        return
    inner.hf_quantizer = _Compilable(quantizer)
    try:
        yield
    finally:
        inner.hf_quantizer = quantizer


class _Compilable:
    """A quantizer, said to be compilable."""

    is_compileable = True

    def __init__(self, quantizer):
        self._quantizer = quantizer

    def __getattr__(self, name):
        return getattr(self._quantizer, name)
