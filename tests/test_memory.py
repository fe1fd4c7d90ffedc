"""The memory estimate's arithmetic on Qwen3-8B's shape, numbers worked out by hand."""

from __future__ import annotations

import pytest

from trustee_lite.memory import (
    CUDA_CONTEXT,
    FRAGMENTATION,
    NF4_BYTES,
    Estimate,
    Shape,
    activation_bytes,
    kv_bytes,
    lora_params,
    lora_training_bytes,
    weight_bytes,
)

QWEN3_8B = Shape(layers=36, hidden=4096, intermediate=12288, heads=32, kv_heads=8, head_dim=128, vocab=151936,
                 tied=False, window=40960)
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_parameters_of_qwen3_8b():
    # per layer: q 4096x4096, k and v 4096x1024, o 4096x4096, gate/up/down 3 x 4096x12288
    assert QWEN3_8B.linear_params == 36 * (4096 * (4096 + 1024 + 1024 + 4096) + 3 * 4096 * 12288) == 6_945_767_424
    assert QWEN3_8B.embedding_params == 2 * 151936 * 4096 == 1_244_659_712  # input and output embeddings
    assert QWEN3_8B.params == 8_190_427_136  # Qwen3-8B: "8.2B parameters"


def test_weights_in_16_and_4_bits():
    assert weight_bytes(QWEN3_8B, four_bit=False) == 2 * 8_190_427_136
    assert weight_bytes(QWEN3_8B, four_bit=True) == pytest.approx(6_945_767_424 * NF4_BYTES + 2 * 1_244_659_712)
    assert weight_bytes(QWEN3_8B, four_bit=True) / 2**30 == pytest.approx(5.65, abs=0.01)


def test_kv_cache_per_token():
    assert kv_bytes(QWEN3_8B, 1) == 2 * 36 * 8 * 128 * 2 == 147_456  # k and v, 36 layers, 8 heads of 128, bf16
    assert kv_bytes(QWEN3_8B, 32 * 4096) / 2**30 == pytest.approx(18.0)


def test_lora_rank_16_on_every_projection():
    per_layer = 16 * ((4096 + 4096) + 2 * (4096 + 1024) + (4096 + 4096) + 2 * (4096 + 12288) + (12288 + 4096))
    assert per_layer == 1_212_416
    assert lora_params(QWEN3_8B, 16, ALL) == 36 * per_layer == 43_646_976
    assert lora_training_bytes(43_646_976) == 16 * 43_646_976  # fp32 weights, grads, Adam m and v
    assert lora_params(QWEN3_8B, 16, ["q_proj", "nonexistent"]) == 36 * 16 * 8192


def test_activations_with_and_without_checkpointing():
    n = 2 * 2048
    with_ckpt = 2 * n * (36 * 4096 + 4 * 4096 + 3 * 12288) + n * 151936 * 10
    assert activation_bytes(QWEN3_8B, 2, 2048, checkpointing=True, kl=False) == with_ckpt
    assert activation_bytes(QWEN3_8B, 2, 2048, checkpointing=True, kl=True) == with_ckpt + n * 151936 * 6
    assert activation_bytes(QWEN3_8B, 2, 2048, checkpointing=False, kl=False) == 2 * n * 36 * (10 * 4096 + 4 * 12288) + n * 151936 * 10


def test_peak_is_the_larger_phase_with_context_and_slack():
    e = Estimate(weights=5.0, generation_kv=3.0, lora=1.0, activations=4.0)
    assert (e.generation, e.training) == (8.0, 10.0)
    assert e.peak == pytest.approx(10.0 * (1 + FRAGMENTATION) + CUDA_CONTEXT)


def test_logits_only_at_policy_positions():
    # 2 rows of 5,000 tokens, 1,500 of them the policy's: logits at most at 2 x 1,500 positions of each row
    full = activation_bytes(QWEN3_8B, 2, 5000, checkpointing=True, kl=False)
    kept = activation_bytes(QWEN3_8B, 2, 5000, checkpointing=True, kl=False, policy_tokens=1500)
    assert full - kept == 2 * (5000 - 3000) * 151936 * 10
    assert activation_bytes(QWEN3_8B, 1, 800, checkpointing=True, kl=False, policy_tokens=1500) == \
        activation_bytes(QWEN3_8B, 1, 800, checkpointing=True, kl=False)
