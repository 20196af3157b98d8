"""The one precision table: what each weight precision stores, needs and is implemented by.

Every part of the library reads it: the task spec (which precisions a task may ask for),
the sizing engine (bytes per weight, compute dtype, GPU feature, KV-cache bytes), the
quantize backends (which backends implement a precision, in preference order) and the
search (the order it walks), the decision record (the precision a GPU deployment is sized
at), and every writer of the ``quant_config`` dict (:func:`quant_config`).

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

Only the precisions of :data:`SEARCH_ORDER` have quantize backends; the others (fp32, fp16,
nf4, ``int4-gN``) are sizing-only: the engine can size them, the pipeline does not make them.
No torch import here: the sizing engine and the task spec load this without it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from rightsizer.errors import ConfigError

# Catalog feature -> minimum NVIDIA compute capability. The catalog derives a GPU's feature
# flags from these (rightsizer/data/gpus.yaml says so in its header); the quantize backends'
# compute-capability checks read them too.
FEATURE_MIN_CC: dict[str, float] = {
    # bf16 tensor cores: Ampere and later (CUDA C++ Programming Guide, "Compute Capabilities";
    # torch.cuda.is_bf16_supported() checks the same major >= 8)
    "bf16": 8.0,
    # FlashAttention-2 supports Ampere, Ada and Hopper (https://github.com/Dao-AILab/flash-attention)
    "flash_attention_2": 8.0,
    # fp8 (e4m3/e5m2) tensor cores: Ada 8.9 and Hopper 9.0 (NVIDIA Ada and Hopper architecture
    # whitepapers; torch._scaled_mm, which torchao's fp8 kernels call, requires sm_89)
    "fp8": 8.9,
    # vLLM quantization min_capability: bitsandbytes 75, gptq 60, awq 75
    # (https://docs.vllm.ai/en/latest/features/quantization/supported_hardware.html)
    "bnb": 7.5,
    "gptq": 6.0,
    "awq": 7.5,
}


@dataclass(frozen=True)
class Precision:
    """One weight precision: storage, compute dtype, the GPU feature it needs, its backends."""

    name: str
    bits: float  # bits per quantized weight, before scales
    group_size: int = 0  # weights per scale group (0: no per-group scales)
    scale_bits: float = 0.0  # bits of metadata per group (scale + zero point)
    extra_bits: float = 0.0  # second-level metadata per weight (bnb double quant)
    compute: str = "bf16"  # dtype whose peak FLOP/s applies: fp32, bf16, fp16, fp8, int8
    feature: str | None = None  # catalog feature flag its kernels need (None: any GPU)
    kernel: str = ""  # the family used for quant_memory_efficiency ("int8", "int4", "nf4", "fp8")
    activation_bytes: int = 2
    dense_bytes: int = 2  # bytes of the un-quantized tensors (embeddings, LM head, norms)
    kv_bytes: int | None = None  # bytes per KV-cache element when used as the KV dtype (None: not one)
    backends: tuple[str, ...] = ()  # quantize backends (rightsizer.runtime.backends.BACKENDS), preferred first
    sizing_name: str = ""  # the precision a GPU deployment of it is sized at ("": its own name)

    def __post_init__(self) -> None:
        if not self.sizing_name:
            object.__setattr__(self, "sizing_name", self.name)

    @property
    def bits_per_weight(self) -> float:
        meta = self.scale_bits / self.group_size if self.group_size else 0.0
        return self.bits + meta + self.extra_bits

    @property
    def bytes_per_weight(self) -> float:
        """Bytes per block-matrix weight, group scales and zero points included."""
        return self.bits_per_weight / 8

    @property
    def is_quantized(self) -> bool:
        return self.bits < 16

    @property
    def min_compute_capability(self) -> float | None:
        """Lowest NVIDIA compute capability with the kernels this precision needs (None: any)."""
        return FEATURE_MIN_CC.get(self.feature) if self.feature else None


def _int4(group: int) -> Precision:
    # GPTQ / AWQ: 4-bit weights, an fp16 scale and a packed 4-bit zero point per group.
    # Only group 128 is a search precision; other groups are sized, not made by the pipeline.
    backends = ("torchao-int4wo", "bnb-nf4", "torch-int4pack", "gptq", "awq") if group == 128 else ()
    return Precision(f"int4-g{group}" if group != 128 else "int4", 4, group, 16 + 4,
                     compute="bf16", feature="awq", kernel="int4", backends=backends)


PRECISION_TABLE: dict[str, Precision] = {p.name: p for p in (
    # fp32 is what a model is evaluated at on a CPU; on a GPU it is served in bf16.
    Precision("fp32", 32, compute="fp32", activation_bytes=4, dense_bytes=4, kv_bytes=4, sizing_name="bf16"),
    Precision("bf16", 16, compute="bf16", feature="bf16", kv_bytes=2, backends=("native",)),
    Precision("fp16", 16, compute="fp16", kv_bytes=2),
    # fp8 W8A8 (per-tensor scales, negligible): needs fp8 tensor cores.
    Precision("fp8", 8, compute="fp8", feature="fp8", kernel="fp8", kv_bytes=1, backends=("torchao-fp8wo",)),
    # int8 weight-only: one fp16 scale per output row ~ per 4096 weights for a 4096-wide input.
    Precision("int8", 8, 4096, 16, compute="bf16", feature="bnb", kernel="int8", kv_bytes=1,
              backends=("torchao-int8wo", "bnb-int8")),
    _int4(128),
    # bitsandbytes NF4: 8-bit absmax per 64 weights (double quant), fp32 per 256 absmax blocks.
    Precision("nf4", 4, 64, 8, extra_bits=32 / (64 * 256), compute="bf16", feature="bnb", kernel="nf4"),
)}

ALIASES: dict[str, str] = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "half": "fp16",
                           "gptq": "int4", "awq": "int4", "int4-g128": "int4", "bnb-int8": "int8",
                           "bnb-nf4": "nf4", "fp8-e4m3": "fp8"}

SEARCH_ORDER: tuple[str, ...] = ("bf16", "fp8", "int8", "int4")
"""The precisions the quantize search makes, high to low: the ones a task spec may ask for
and the sizing engine's default candidates."""

KV_PRECISIONS: tuple[str, ...] = tuple(n for n, p in PRECISION_TABLE.items() if p.kv_bytes)
"""The KV-cache dtypes the sizing engine knows."""

QUANT_CONFIG_VERSION = 1
"""Version of the ``quant_config`` dict :func:`quant_config` writes and ``apply_quant_config`` reads."""

QUANT_CONFIG_KEYS: tuple[str, ...] = ("version", "precision", "backend", "skip_modules", "skip_precision",
                                      "dtype", "group_size", "pre_quantized")
"""The keys :func:`quant_config` writes itself (``pre_quantized`` only when true)."""


def _key(name: str) -> str:
    key = str(name).strip().lower()
    return ALIASES.get(key, key)


def get_precision(name: str | Precision) -> Precision:
    """Look a precision up by name or alias (``int4-g32`` style group sizes accepted)."""
    if isinstance(name, Precision):
        return name
    key = _key(name)
    if key in PRECISION_TABLE:
        return PRECISION_TABLE[key]
    m = re.fullmatch(r"int4-g(\d+)", key)
    if m and int(m.group(1)) > 0:
        return _int4(int(m.group(1)))
    raise ConfigError(f"unknown precision {name!r}; known: {', '.join(PRECISION_TABLE)} (and int4-gN)")


def kv_bytes_per_element(kv_precision: str) -> int:
    """Bytes per KV-cache element of a KV dtype (aliases accepted); ConfigError for others."""
    p = PRECISION_TABLE.get(_key(kv_precision))
    if p is None or not p.kv_bytes:
        raise ConfigError(f"unknown KV-cache precision {kv_precision!r}; known: {', '.join(KV_PRECISIONS)}")
    return p.kv_bytes


def check_search_precision(name: Any, field_name: str = "precision") -> Precision:
    """The table entry of a precision the search makes (one of :data:`SEARCH_ORDER`, exact name).

    ConfigError naming ``field_name``, the value and the known ones otherwise; aliases are not
    accepted here because the name is written into configs and compared as it is.
    """
    if not isinstance(name, str) or name not in SEARCH_ORDER:
        raise ConfigError(f"{field_name}: {name!r} is not a known precision; expected one of {list(SEARCH_ORDER)}")
    return PRECISION_TABLE[name]


def quant_config(precision: str, backend: str, *, skip_modules: Iterable[str] = (),
                 skip_precision: str = "bf16", dtype: str = "bfloat16", group_size: int | None = None,
                 pre_quantized: bool = False, **facts: Any) -> dict[str, Any]:
    """The ``quant_config`` dict registered with a model: how to rebuild its quantization.

    ``apply_quant_config`` re-applies it to the unquantized weights; a ``pre_quantized``
    config (GPTQ/AWQ) says the checkpoint is already quantized (``load_gptq_model`` reads
    it). ``facts`` are recorded as they are (a checkpoint's ``calibration_samples``,
    ``device``, ``desc_act``); they may not replace the keys written here.
    """
    check_search_precision(precision, "quant_config.precision")
    check_search_precision(skip_precision, "quant_config.skip_precision")
    config: dict[str, Any] = {"version": QUANT_CONFIG_VERSION, "precision": precision, "backend": backend,
                              "skip_modules": list(skip_modules), "skip_precision": skip_precision,
                              "dtype": dtype, "group_size": group_size}
    if pre_quantized:
        config["pre_quantized"] = True
    clash = sorted(set(facts) & set(QUANT_CONFIG_KEYS))
    if clash:
        raise ValueError(f"quant_config: {clash} are written by quant_config itself, not passed as facts")
    config.update(facts)
    return config


__all__ = ["ALIASES", "FEATURE_MIN_CC", "KV_PRECISIONS", "PRECISION_TABLE", "Precision", "QUANT_CONFIG_KEYS",
           "QUANT_CONFIG_VERSION", "SEARCH_ORDER", "check_search_precision", "get_precision", "kv_bytes_per_element",
           "quant_config"]
