"""Weights at each precision, KV cache per token / sequence, activations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError
from rightsizer.sizing import (
    count_params, get_precision, kv_bytes_per_sequence, kv_bytes_per_token, model_spec, weights_bytes)

CONFIGS = Path(__file__).parent / "fixtures" / "configs"


def spec(name):
    return model_spec(json.loads((CONFIGS / f"{name}.json").read_text()))


def test_kv_bytes_per_token_gqa_vs_mha():
    # Llama-3.1-8B: 2 (K,V) x 32 layers x 8 kv heads x 128 x 2 bytes = 128 KiB
    assert kv_bytes_per_token(spec("llama-3.1-8b"), "bf16") == 131_072
    # Llama-2-7B has no GQA: 32 kv heads -> 4x more
    assert kv_bytes_per_token(spec("llama-2-7b"), "bf16") == 524_288
    # Gemma-2B: multi-query (1 kv head) with explicit head_dim 256, not hidden/heads
    assert kv_bytes_per_token(spec("gemma-2b"), "bf16") == 2 * 18 * 1 * 256 * 2
    # Qwen2.5-0.5B: 2 kv heads of 64
    assert kv_bytes_per_token(spec("qwen2.5-0.5b"), "bf16") == 2 * 24 * 2 * 64 * 2
    # GPT-2: all heads cache K and V
    assert kv_bytes_per_token(spec("gpt2"), "fp16") == 2 * 12 * 768 * 2
    assert kv_bytes_per_token(spec("llama-3.1-8b"), "fp8") == 65_536


def test_sliding_window_caps_kv():
    m = spec("mistral-7b-v0.1")
    per_tok = kv_bytes_per_token(m, "bf16")
    assert kv_bytes_per_sequence(m, 1000, "bf16") == 1000 * per_tok
    assert kv_bytes_per_sequence(m, 32_000, "bf16") == 4096 * per_tok  # every layer slides
    g2 = spec("gemma-2-2b")  # 13 of 26 layers slide over 4096 tokens
    per_layer = kv_bytes_per_token(g2, "bf16") // 26
    assert kv_bytes_per_sequence(g2, 8192, "bf16") == per_layer * (13 * 4096 + 13 * 8192)


def test_weights_bytes_per_precision():
    pc = count_params(json.loads((CONFIGS / "llama-3.1-8b.json").read_text()))
    assert weights_bytes(pc, "bf16") == 2 * pc.total
    assert weights_bytes(pc, "fp32") == 4 * pc.total
    assert weights_bytes(pc.total, "fp8") == pc.total
    dense = pc.total - pc.linear  # embeddings + lm_head + norms stay 16-bit
    assert weights_bytes(pc, "fp8") == pc.linear + 2 * dense
    # int4 GPTQ/AWQ g128: 4 bits + (16-bit scale + 4-bit zero) / 128 = 4.15625 bits
    assert get_precision("int4").bits_per_weight == pytest.approx(4.15625)
    assert weights_bytes(pc, "int4") == round(pc.linear * 4.15625 / 8 + 2 * dense)
    # group 32 costs more metadata than group 128
    assert weights_bytes(pc, "int4-g32") > weights_bytes(pc, "int4")
    # bnb NF4 with double quant: 4 + 8/64 + 32/(64*256) bits
    assert get_precision("nf4").bits_per_weight == pytest.approx(4 + 0.125 + 32 / 16384)
    sizes = [weights_bytes(pc, p) for p in ("fp32", "bf16", "int8", "fp8", "int4", "nf4")]
    assert sizes[0] > sizes[1] > sizes[2] > sizes[3] > sizes[4] > sizes[5]  # NF4 double-quant < GPTQ g128
    assert 5.0e9 < weights_bytes(pc, "int4") < 6.0e9  # ~5.7 GB published for AWQ Llama-3.1-8B


def test_unknown_precisions():
    with pytest.raises(ConfigError, match="unknown precision 'int3'.*bf16"):
        get_precision("int3")
    with pytest.raises(ConfigError, match="unknown KV-cache precision"):
        kv_bytes_per_token(spec("gpt2"), "int4")
    assert get_precision("GPTQ").name == "int4" and get_precision("bfloat16").name == "bf16"
