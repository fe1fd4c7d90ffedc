"""Compiled decoding for the transformers backend: static key/value caches in batch buckets.

transformers' `generate` compiles the forward of its decode steps (torch.compile; CUDA graphs on
a GPU, its "reduce-overhead" mode) when it is handed a static cache and a compile config. A static
cache has a fixed shape, so that the step can be captured once as a CUDA graph and replayed: a
batch of n rows runs in the smallest bucket of at least n rows (1, 2, 4, ... up to the
backend's batch size), padded with rows that end at their first token, and of the fewest slots
that hold its prompt and new tokens (1,024, 2,048, ... up to `static_cache_tokens`). Every
bucket's cache is a view of the largest's, so all buckets together take the memory of the
largest alone: batch size x `static_cache_tokens` slots.

Graphs compile per adapter state (on for the policy, off for the simulator roles), a few each
(torch's automatic dynamic shapes: compile_config); the LoRA update changes the adapter's weights in place, which a compiled
graph reads as inputs, so training never recompiles it.
"""

from __future__ import annotations

import contextlib


def bucket_sizes(largest: int, smallest: int = 1) -> tuple[int, ...]:
    """Doublings of `smallest` below `largest`, then `largest`: (1, 2, 4, 8, 12) for 12 rows;
    (1024, 2048, 4096, 6144) for 6,144 tokens from 1,024."""
    sizes = [min(smallest, largest)]
    while sizes[-1] * 2 < largest:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != largest:
        sizes.append(largest)
    return tuple(sizes)


def bucket_for(need: int, sizes: tuple[int, ...]) -> int:
    """The smallest bucket that holds `need`."""
    for size in sizes:
        if size >= need:
            return size
    raise ValueError(f"{need} exceeds the largest bucket ({sizes[-1]})")


SHORTEST = 1024  # the shortest length bucket, in tokens


class StaticCaches:
    """The static caches of one model, one per (rows, length) bucket, each a view of the first
    rows and first slots of the largest.

    Lengths are buckets too, because a decode step attends over every slot of its cache, masked
    or not: a batch of short requests in 6,144-token caches would read more keys and values a
    step than weights. The largest allocates its tensors at its first use (of any bucket, since
    the others view it), then they stay: `tokens` slots a row, prompt and new tokens together.
    """

    def __init__(self, model_config, tokens: int, max_rows: int):
        self.config = model_config
        self.tokens = tokens
        self.sizes = bucket_sizes(max_rows)
        self.lengths = bucket_sizes(tokens, SHORTEST)
        self._caches: dict[tuple[int, int], object] = {}

    def take(self, rows: int, length: int):
        """((rows, length) bucket, cache) for a batch of `rows` needing `length` slots, emptied;
        call inside `torch.inference_mode()` (the cache's tensors are made there)."""
        bucket = (bucket_for(rows, self.sizes), bucket_for(length, self.lengths))
        cache = self._caches.get(bucket)
        if cache is None:
            cache = self._caches[bucket] = self._make(*bucket)
        cache.reset()
        return bucket, cache

    def _make(self, rows: int, length: int):
        from transformers import StaticCache

        cache = StaticCache(config=self.config, max_cache_len=length)
        largest = (self.sizes[-1], self.lengths[-1])
        if (rows, length) == largest:
            return cache
        if largest not in self._caches:
            self._caches[largest] = self._make(*largest)
        for layer, backing in zip(cache.layers, self._caches[largest].layers):
            layer.lazy_initialization = _as_part_of(layer, backing, rows, largest[0])
        return cache


def _as_part_of(layer, backing, rows: int, largest: int):
    """A replacement for `layer`'s lazy initialisation: it sets everything the layer's own would
    from the first keys and values it sees, on zero-sized tensors (no memory), then points the
    layer at the first `rows` rows and first slots of `backing` (allocated first if it is not)."""
    init = type(layer).lazy_initialization

    def initialise(key_states, value_states):
        import torch

        if not backing.is_initialized:
            shape = (largest, key_states.shape[1], 0)
            type(backing).lazy_initialization(backing, key_states.new_zeros(shape + key_states.shape[3:]),
                                              value_states.new_zeros(shape + value_states.shape[3:]))
        init(layer, key_states[:, :0], value_states[:, :0])
        layer.num_heads = key_states.shape[1]
        slots = layer.max_cache_len
        layer.keys, layer.values = backing.keys[:rows, :, :slots], backing.values[:rows, :, :slots]
        if not torch.compiler.is_compiling():
            torch._dynamo.mark_static_address(layer.keys)
            torch._dynamo.mark_static_address(layer.values)

    return initialise


def compile_config(device: str):
    """How generate compiles the decode step: torch's automatic dynamic shapes (the first bucket
    compiles for its size, the next one of another size for any size in that dimension, which
    later buckets reuse: for four row buckets of the embedded model on the CPU, two compilations
    in 163 s where one per bucket took 248 s); CUDA graphs on a GPU, recorded per bucket; graph
    breaks allowed (a quantised kernel may need one)."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=False, dynamic=None, mode="reduce-overhead")
    config._compile_all_devices = device != "cuda"  # transformers compiles on CUDA alone unless told
    return config


def allow_recompiles(graphs: int) -> None:
    """torch.compile keeps 8 graphs of a function by default, then runs it eager: room for one
    per bucket in both adapter states, should automatic dynamic shapes not apply."""
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
