"""The model as a list of operations per phase, and their roofline time on one GPU.

Each :class:`Op` carries the FLOPs and bytes moved *per GPU* (tensor parallel shards divide
both) for all layers of its kind. An op's time is
``max(flops / (peak x compute_eff), bytes / (bandwidth x memory_eff))``; a phase adds the
tensor-parallel all-reduces and one fixed per-step overhead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from rightsizer.precisions import Precision, kv_bytes_per_element
from rightsizer.sizing.catalog import GPU
from rightsizer.sizing.params import ModelSpec


@dataclass(frozen=True)
class Op:
    """One kind of operation summed over the layers that run it, per GPU."""

    name: str
    flops: float
    bytes: float
    quantized_weights: bool = False  # memory traffic is dominated by dequantized weights

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")


@dataclass
class PhaseResult:
    """FLOPs, bytes, verdict and latency of one phase (prefill or one decode step) per GPU."""

    name: str
    flops: float
    bytes: float
    latency_ms: float
    compute_ms: float
    memory_ms: float
    comm_ms: float
    overhead_ms: float
    threshold: float  # the GPU's ridge point (peak FLOP/s / bandwidth) for this compute dtype
    ops: list[dict[str, Any]] = field(default_factory=list)

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    @property
    def bound(self) -> str:
        return "compute" if self.arithmetic_intensity >= self.threshold else "memory"

    @property
    def achieved_flops(self) -> float:
        return self.flops / (self.latency_ms / 1e3) if self.latency_ms > 0 else 0.0

    def to_dict(self, with_ops: bool = True) -> dict[str, Any]:
        d = {
            "flops": self.flops, "bytes": self.bytes, "arithmetic_intensity": self.arithmetic_intensity,
            "threshold": self.threshold, "bound": self.bound, "latency_ms": self.latency_ms,
            "compute_ms": self.compute_ms, "memory_ms": self.memory_ms, "comm_ms": self.comm_ms,
            "overhead_ms": self.overhead_ms,
        }
        if with_ops:
            d["ops"] = self.ops
        return d


def _attention_pairs(prompt: int, window: int | None) -> float:
    """Causal (query, key) pairs of one sequence, window-capped."""
    if not window or prompt <= window:
        return prompt * (prompt + 1) / 2
    return window * (window + 1) / 2 + (prompt - window) * window


def _experts_touched(spec: ModelSpec, tokens: int) -> float:
    """Expected number of distinct experts routed to by ``tokens`` tokens (uniform routing)."""
    e, k = spec.experts, spec.experts_per_token
    return e * (1 - (1 - k / e) ** tokens)


def build_ops(spec: ModelSpec, prec: Precision, kv_precision: str, batch: int, tokens_per_seq: int,
              context: int, phase: str, tp: int = 1) -> list[Op]:
    """Operations of a prefill (``tokens_per_seq`` = prompt) or one decode step
    (``tokens_per_seq`` = 1 at KV length ``context``), per GPU under ``tp``-way tensor parallelism."""
    h, q, kv, L = spec.hidden, spec.q_dim, spec.kv_dim, spec.layers
    ab = prec.activation_bytes
    bpw = prec.bytes_per_weight
    kvb = kv_bytes_per_element(kv_precision)
    T = batch * tokens_per_seq
    kv_share = 1 / min(tp, spec.kv_heads)  # KV heads replicate when tp > kv_heads
    ops: list[Op] = []

    def linear(name: str, n_in: int, n_out: int, layers: int = L, weight_rows: float | None = None) -> Op:
        flops = 2 * T * n_in * n_out * layers / tp
        w = (weight_rows if weight_rows is not None else n_in * n_out) * bpw
        moved = (w + T * (n_in + n_out) * ab) * layers / tp
        return Op(name, flops, moved, quantized_weights=prec.is_quantized)

    ops.append(linear("qkv_proj", h, q + 2 * kv))
    # Attention core: QK^T and softmax(S)V, 2 FLOPs per MAC each.
    slide, full = (spec.sliding_layers, L - spec.sliding_layers) if spec.sliding_window else (0, L)
    for label, n_layers, window in (("attention", full, None), ("attention_sliding", slide, spec.sliding_window)):
        if n_layers == 0:
            continue
        if phase == "prefill":
            pairs = _attention_pairs(tokens_per_seq, window)
            flops = 4 * batch * spec.heads * spec.head_dim * pairs * n_layers / tp
            moved = (T * (2 * q + 2 * kv) * ab + T * 2 * kv * kvb) * n_layers / tp
        else:
            ctx = min(context, window) if window else context
            flops = 4 * batch * spec.heads * spec.head_dim * ctx * n_layers / tp
            moved = (batch * ctx * 2 * kv * kvb * kv_share + batch * (2 * q + 2 * kv) * ab / tp) * n_layers
        ops.append(Op(label, flops, moved))
    ops.append(linear("o_proj", q, h))
    mats = 3 if spec.gated_mlp else 2
    if spec.is_moe:
        touched = _experts_touched(spec, T)
        k = spec.experts_per_token
        flops = 2 * T * k * mats * h * spec.intermediate * L / tp
        moved = (touched * mats * h * spec.intermediate * bpw
                 + T * k * (2 * h + mats * spec.intermediate) * ab) * L / tp
        ops.append(Op("moe_experts", flops, moved, quantized_weights=prec.is_quantized))
        ops.append(Op("router", 2 * T * h * spec.experts * L, (h * spec.experts * 2 + T * h * ab) * L))
    else:
        flops = 2 * T * mats * h * spec.intermediate * L / tp
        moved = (mats * h * spec.intermediate * bpw + T * (2 * h + mats * spec.intermediate) * ab) * L / tp
        ops.append(Op("mlp", flops, moved, quantized_weights=prec.is_quantized))
    # Norms and residual adds: memory-bound elementwise traffic on the residual stream.
    n_norms = spec.norms_per_layer * L + 1
    ops.append(Op("norms_residual", 5 * T * h * n_norms, 3 * T * h * ab * n_norms))
    # LM head on the last position of each sequence (logits_to_keep=1), vocab-parallel under TP.
    head_bytes = 2 if prec.dense_bytes == 2 else 4
    ops.append(Op("lm_head", 2 * batch * h * spec.vocab / tp,
                  (spec.vocab * h * head_bytes + batch * (h * ab + spec.vocab * 4)) / tp))
    ops.append(Op("embedding", 0.0, T * h * head_bytes))
    return ops


def phase_time(name: str, ops: list[Op], gpu: GPU, prec: Precision, tp: int, tokens: int, hidden: int,
               layers: int, compute_eff: float, memory_eff: float, overhead_ms: float,
               quant_memory_eff: float, allreduce_latency_us: float, link_eff: float,
               extra_ms: float = 0.0, floor_ms: float = 0.0) -> PhaseResult:
    """Roofline time of one phase on one GPU (all ops + all-reduces + overhead)."""
    peak = gpu.peak_flops(prec.compute)
    if peak <= 0:
        peak = gpu.peak_flops("fp16")  # no tensor cores for this dtype: fall back (caller warns)
    bw = gpu.memory_bandwidth
    total_ms = compute_ms = memory_ms = 0.0
    flops = moved = 0.0
    rows = []
    for op in ops:
        mem_eff = memory_eff * (quant_memory_eff if op.quantized_weights else 1.0)
        c = op.flops / (peak * compute_eff) * 1e3
        m = op.bytes / (bw * mem_eff) * 1e3
        t = max(c, m)
        total_ms += t
        compute_ms += c
        memory_ms += m
        flops += op.flops
        moved += op.bytes
        rows.append({"name": op.name, "flops": op.flops, "bytes": op.bytes,
                     "arithmetic_intensity": op.arithmetic_intensity,
                     "bound": "compute" if c >= m else "memory", "latency_ms": t})
    comm_ms = 0.0
    if tp > 1:
        size = tokens * hidden * prec.activation_bytes
        per = 2 * (tp - 1) / tp * size / (gpu.interconnect_bandwidth * link_eff) * 1e3 + allreduce_latency_us / 1e3
        comm_ms = 2 * layers * per
    # A calibrated host-bound floor (eager frameworks) caps how fast a step can be launched.
    latency = max(total_ms + comm_ms, floor_ms) + overhead_ms + extra_ms
    return PhaseResult(name=name, flops=flops, bytes=moved, latency_ms=latency, compute_ms=compute_ms,
                       memory_ms=memory_ms, comm_ms=comm_ms, overhead_ms=overhead_ms + extra_ms,
                       threshold=peak / bw, ops=rows)
