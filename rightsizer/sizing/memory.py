"""Memory: weights at each precision (with quantization scale overhead), KV cache, activations.

The precisions themselves (bits, scale overhead, compute dtype, KV bytes) are the table in
:mod:`rightsizer.precisions`; this module turns them into bytes for one model.
"""

from __future__ import annotations

from rightsizer.precisions import Precision, get_precision, kv_bytes_per_element
from rightsizer.sizing.params import ModelSpec, ParamCount


def default_kv_precision(precision: str | Precision) -> str:
    """KV cache stays at the activation dtype unless asked otherwise (vLLM ``kv_cache_dtype=auto``)."""
    return "fp32" if get_precision(precision).name == "fp32" else "bf16"


# --------------------------------------------------------------------------- weights


def weights_bytes(params: ParamCount | int, precision: str | Precision) -> int:
    """Bytes of the weights. With a :class:`ParamCount`, block matrices are quantized and
    embeddings/LM head/norms kept at 16-bit; with a plain int, every parameter is quantized."""
    prec = get_precision(precision)
    if isinstance(params, ParamCount):
        dense = params.total - params.linear
        return int(round(params.linear * prec.bytes_per_weight + dense * prec.dense_bytes))
    return int(round(int(params) * prec.bytes_per_weight))


# --------------------------------------------------------------------------- KV cache


def kv_bytes_per_token(spec: ModelSpec, kv_precision: str = "bf16") -> int:
    """KV bytes for one token across all layers: 2 (K and V) x layers x kv_heads x head_dim x bytes.

    Uses ``num_key_value_heads`` (GQA/MQA) and an explicit ``head_dim`` where the config gives one.
    Sliding-window layers cap the cached context; see :func:`kv_bytes_per_sequence`.
    """
    return 2 * spec.layers * spec.kv_heads * spec.head_dim * kv_bytes_per_element(kv_precision)


def kv_bytes_per_sequence(spec: ModelSpec, tokens: int, kv_precision: str = "bf16") -> int:
    """KV bytes for one sequence of ``tokens`` tokens, honouring sliding windows."""
    per_layer_token = 2 * spec.kv_heads * spec.head_dim * kv_bytes_per_element(kv_precision)
    window = spec.sliding_window
    if not window or tokens <= window:
        return per_layer_token * spec.layers * tokens
    slide = spec.sliding_layers
    return per_layer_token * (slide * window + (spec.layers - slide) * tokens)


# --------------------------------------------------------------------------- activations


def activation_bytes(spec: ModelSpec, batch: int, prompt_tokens: int, precision: str | Precision = "bf16") -> int:
    """Peak transient activation memory of one prefill step (non-chunked), in bytes.

    Residual stream + q/k/v + the widest MLP intermediate (gate and up for gated MLPs, top-k
    experts for MoE) for every token in flight, plus fp32 logits for the last position of each
    sequence. FlashAttention/SDPA never materialise the score matrix, so it is not counted.
    """
    prec = get_precision(precision)
    tokens = batch * prompt_tokens
    mlp_width = spec.intermediate * (2 if spec.gated_mlp else 1) * max(1, spec.experts_per_token)
    per_token = (2 * spec.hidden + spec.q_dim + 2 * spec.kv_dim + mlp_width) * prec.activation_bytes
    return tokens * per_token + batch * spec.vocab * 4
