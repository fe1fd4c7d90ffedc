"""GPU memory of a recipe, estimated from the model's config alone (no weights loaded).

The formula (README, "check"): the peak is the larger of the generation phase (weights + KV
cache of a full batch) and the training phase (weights + LoRA weights, gradients and Adam
state + activations of one micro-batch), plus the CUDA context and a fragmentation margin.
Pure arithmetic; tested on hand-computed numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

GIB = 1024**3
NF4_BYTES = 0.5 + 0.0156  # 4-bit weights + double-quantised block scales (bitsandbytes NF4)
CUDA_CONTEXT = 0.6 * GIB  # the CUDA context and kernels of torch
FRAGMENTATION = 0.10  # the caching allocator's slack


@dataclass(frozen=True)
class Shape:
    """What the estimate needs from a decoder-only model's config."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    window: int | None  # max_position_embeddings

    @classmethod
    def of(cls, config) -> Shape:
        c = config.get_text_config() if hasattr(config, "get_text_config") else config
        heads = c.num_attention_heads
        return cls(
            layers=c.num_hidden_layers, hidden=c.hidden_size, intermediate=c.intermediate_size, heads=heads,
            kv_heads=getattr(c, "num_key_value_heads", None) or heads,
            head_dim=getattr(c, "head_dim", None) or c.hidden_size // heads, vocab=c.vocab_size,
            tied=bool(getattr(c, "tie_word_embeddings", False)), window=getattr(c, "max_position_embeddings", None),
        )

    def module_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) features of each projection of one layer."""
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        return {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
                "gate_proj": (h, i), "up_proj": (h, i), "down_proj": (i, h)}

    @property
    def linear_params(self) -> int:
        return self.layers * sum(a * b for a, b in self.module_shapes().values())

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def params(self) -> int:
        return self.linear_params + self.embedding_params


def weight_bytes(shape: Shape, four_bit: bool, bytes_per_param: float = 2.0) -> float:
    """4 bits: the projections in NF4, embeddings and output head kept in 16 bits (as bitsandbytes does)."""
    if four_bit:
        return shape.linear_params * NF4_BYTES + shape.embedding_params * 2.0
    return shape.params * bytes_per_param


def kv_bytes(shape: Shape, tokens: int, bytes_per_value: float = 2.0) -> float:
    """Keys and values of every layer for `tokens` positions (all rows of a batch together)."""
    return 2 * shape.layers * shape.kv_heads * shape.head_dim * bytes_per_value * tokens


def lora_params(shape: Shape, rank: int, targets: list[str]) -> int:
    modules = shape.module_shapes()
    return shape.layers * sum(rank * (modules[t][0] + modules[t][1]) for t in targets if t in modules)


def lora_training_bytes(params: int) -> float:
    """fp32 weights, gradients and Adam's two moments: 16 bytes a parameter."""
    return 16.0 * params


def activation_bytes(shape: Shape, micro_batch: int, tokens: int, checkpointing: bool, kl: bool,
                     policy_tokens: int | None = None) -> float:
    """One micro-batch's forward and backward. Per token, in 16 bits: with checkpointing, one
    hidden state per layer plus one layer recomputed ((4 h + 3 i) values); without, every layer
    keeps (10 h + 4 i) values (attention through SDPA: no quadratic term). Logits are computed
    only at positions where a row has a policy token (at most micro_batch x policy_tokens of
    the sequence), 10 bytes a vocabulary entry (bf16 logits, their fp32 copy, the fp32
    log-softmax), 6 more for the KL reference pass."""
    n = micro_batch * tokens
    h, i = shape.hidden, shape.intermediate
    if checkpointing:
        layers = 2.0 * n * (shape.layers * h + 4 * h + 3 * i)
    else:
        layers = 2.0 * n * shape.layers * (10 * h + 4 * i)
    kept = tokens if policy_tokens is None else min(tokens, micro_batch * policy_tokens)
    return layers + micro_batch * kept * shape.vocab * (16.0 if kl else 10.0)


@dataclass(frozen=True)
class Estimate:
    weights: float
    generation_kv: float
    lora: float
    activations: float
    kept_kv: float = 0.0  # earlier policy turns' keys and values, kept for reuse (freed at each update)
    static_kv: float = 0.0  # compiled decoding's static caches: allocated once, held through training

    @property
    def generation(self) -> float:
        return self.weights + self.static_kv + self.generation_kv + self.kept_kv

    @property
    def training(self) -> float:
        return self.weights + self.static_kv + self.lora + self.activations

    @property
    def peak(self) -> float:
        return max(self.generation, self.training) * (1 + FRAGMENTATION) + CUDA_CONTEXT
