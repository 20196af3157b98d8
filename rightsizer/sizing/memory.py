"""Memory: weights at each precision (with quantization scale overhead), KV cache, activations.

Precisions (``PRECISIONS``):

==========  =====================================================  ==================
name        storage of the transformer-block weight matrices        compute dtype
==========  =====================================================  ==================
fp32        4 bytes                                                 fp32
bf16/fp16   2 bytes                                                 bf16 / fp16
fp8         1 byte + per-tensor scale (W8A8, e4m3)                  fp8
int8        1 byte + one fp16 scale per output channel (W8A16)      bf16 (dequantized)
int4        4 bits + fp16 scale and 4-bit zero per group of 128     bf16 (GPTQ/AWQ)
int4-gN     the same with group size N (e.g. ``int4-g32``)          bf16
nf4         bitsandbytes NF4, blocksize 64, double-quantized        bf16
==========  =====================================================  ==================

Embeddings, the LM head, norms and biases stay at 16-bit in every one of these recipes
(bitsandbytes skips ``lm_head``; GPTQ/AWQ/fp8 checkpoints keep it in fp16/bf16).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from rightsizer.errors import ConfigError
from rightsizer.sizing.params import ModelSpec, ParamCount


@dataclass(frozen=True)
class Precision:
    """How one precision stores weights and which tensor-core dtype does the math."""

    name: str
    bits: float  # bits per quantized weight, before scales
    group_size: int = 0  # weights per scale group (0: no per-group scales)
    scale_bits: float = 0.0  # bits of metadata per group (scale + zero point)
    compute: str = "bf16"  # dtype whose peak FLOP/s applies: fp32, bf16, fp16, fp8, int8
    feature: str | None = None  # GPU feature the kernels need (catalog feature flag)
    kernel: str = ""  # the family used for quant_memory_efficiency ("int8", "int4", "nf4", "fp8")
    extra_bits: float = 0.0  # second-level metadata per weight (bnb double quant)
    activation_bytes: int = 2

    @property
    def bits_per_weight(self) -> float:
        meta = self.scale_bits / self.group_size if self.group_size else 0.0
        return self.bits + meta + self.extra_bits

    @property
    def bytes_per_weight(self) -> float:
        return self.bits_per_weight / 8

    @property
    def is_quantized(self) -> bool:
        return self.bits < 16

    @property
    def dense_bytes(self) -> int:
        """Bytes of the un-quantized tensors (embeddings, LM head, norms) under this precision."""
        return 4 if self.name == "fp32" else 2


def _int4(group: int) -> Precision:
    # GPTQ / AWQ: 4-bit weights, an fp16 scale and a packed 4-bit zero point per group.
    return Precision(f"int4-g{group}" if group != 128 else "int4", 4, group, 16 + 4,
                     compute="bf16", feature="awq", kernel="int4")


PRECISIONS: dict[str, Precision] = {
    "fp32": Precision("fp32", 32, compute="fp32", activation_bytes=4),
    "bf16": Precision("bf16", 16, compute="bf16", feature="bf16"),
    "fp16": Precision("fp16", 16, compute="fp16"),
    # fp8 W8A8 (per-tensor scales, negligible): needs fp8 tensor cores.
    "fp8": Precision("fp8", 8, compute="fp8", feature="fp8", kernel="fp8"),
    # int8 weight-only: one fp16 scale per output row ~ per 4096 weights for a 4096-wide input.
    "int8": Precision("int8", 8, 4096, 16, compute="bf16", feature="bnb", kernel="int8"),
    "int4": _int4(128),
    # bitsandbytes NF4: 8-bit absmax per 64 weights (double quant), fp32 per 256 absmax blocks.
    "nf4": Precision("nf4", 4, 64, 8, compute="bf16", feature="bnb", kernel="nf4", extra_bits=32 / (64 * 256)),
}
PRECISION_ALIASES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                     "gptq": "int4", "awq": "int4", "int4-g128": "int4", "bnb-int8": "int8",
                     "bnb-nf4": "nf4", "fp8-e4m3": "fp8"}
KV_PRECISIONS = ("fp32", "bf16", "fp16", "fp8", "int8")
_KV_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1, "int8": 1}


def get_precision(name: str | Precision) -> Precision:
    """Look a precision up by name (``int4-g32`` style group sizes accepted)."""
    if isinstance(name, Precision):
        return name
    key = str(name).strip().lower()
    key = PRECISION_ALIASES.get(key, key)
    if key in PRECISIONS:
        return PRECISIONS[key]
    m = re.fullmatch(r"int4-g(\d+)", key)
    if m and int(m.group(1)) > 0:
        return _int4(int(m.group(1)))
    raise ConfigError(f"unknown precision {name!r}; known: {', '.join(PRECISIONS)} (and int4-gN)")


def kv_bytes_per_element(kv_precision: str) -> int:
    key = PRECISION_ALIASES.get(str(kv_precision).lower(), str(kv_precision).lower())
    if key not in _KV_BYTES:
        raise ConfigError(f"unknown KV-cache precision {kv_precision!r}; known: {', '.join(KV_PRECISIONS)}")
    return _KV_BYTES[key]


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


def weights_bytes_split(params: ParamCount, precision: str | Precision) -> tuple[int, int]:
    """(quantized block-matrix bytes, 16-bit bytes of embeddings / LM head / norms)."""
    prec = get_precision(precision)
    dense = params.total - params.linear
    return int(round(params.linear * prec.bytes_per_weight)), dense * prec.dense_bytes


# --------------------------------------------------------------------------- KV cache


def kv_bytes_per_token(spec: ModelSpec, kv_precision: str = "bf16") -> int:
    """KV bytes for one token across all layers: 2 (K and V) x layers x kv_heads x head_dim x bytes.

    Uses ``num_key_value_heads`` (GQA/MQA) and an explicit ``head_dim`` where the config gives one.
    Sliding-window layers cap the cached context; see :func:`kv_bytes_per_sequence`.
    """
    return 2 * spec.layers * spec.kv_heads * spec.head_dim * kv_bytes_per_element(kv_precision)


def kv_cached_tokens(spec: ModelSpec, tokens: int) -> int:
    """Token-layers actually held in the KV cache for a sequence of ``tokens`` (window-aware),
    expressed in full-model tokens (i.e. divided back by the layer count, rounded up)."""
    window = spec.sliding_window
    if not window or tokens <= window:
        return tokens
    slide = spec.sliding_layers
    token_layers = slide * window + (spec.layers - slide) * tokens
    return -(-token_layers // spec.layers)


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
