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
from rightsizer.sizing.operator_data import share_of_peak
from rightsizer.sizing.params import ModelSpec


@dataclass(frozen=True)
class Op:
    """One kind of operation summed over the layers that run it, per GPU."""

    name: str
    flops: float
    bytes: float
    quantized_weights: bool = False  # memory traffic is dominated by dequantized weights
    kind: str = "gemm"  # gemm, attention_prefill, attention_decode or elementwise: picks its efficiency
    tokens: float = 0.0  # tokens the op processes per layer (a GEMM's M): small M runs below peak
    kernels: int = 0  # kernel launches of this op over all layers (fixed cost each)

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
    launch_ms: float = 0.0  # fixed kernel-launch cost inside latency_ms (small ops at tiny token counts)

    @property
    def arithmetic_intensity(self) -> float:
        return self.flops / self.bytes if self.bytes else float("inf")

    @property
    def bound(self) -> str:
        if self.launch_ms + self.overhead_ms > max(self.compute_ms, self.memory_ms):
            return "overhead"
        return "compute" if self.arithmetic_intensity >= self.threshold else "memory"

    @property
    def achieved_flops(self) -> float:
        return self.flops / (self.latency_ms / 1e3) if self.latency_ms > 0 else 0.0

    def to_dict(self, with_ops: bool = True) -> dict[str, Any]:
        d = {
            "flops": self.flops, "bytes": self.bytes, "arithmetic_intensity": self.arithmetic_intensity,
            "threshold": self.threshold, "bound": self.bound, "latency_ms": self.latency_ms,
            "compute_ms": self.compute_ms, "memory_ms": self.memory_ms, "comm_ms": self.comm_ms,
            "overhead_ms": self.overhead_ms, "launch_ms": self.launch_ms,
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
    if phase == "prefill":
        return build_step_ops(spec, prec, kv_precision, tp, prefill_seqs=batch, prefill_chunk=tokens_per_seq)
    return build_step_ops(spec, prec, kv_precision, tp, decode_seqs=batch, decode_context=context)


def build_step_ops(spec: ModelSpec, prec: Precision, kv_precision: str, tp: int = 1, *,
                   decode_seqs: float = 0, decode_context: float = 0, prefill_seqs: float = 0,
                   prefill_chunk: float = 0, prefill_past: float = 0) -> list[Op]:
    """Operations of one forward step of a continuous batch, per GPU.

    The step decodes one token for each of ``decode_seqs`` sequences (each reading a KV cache of
    ``decode_context`` tokens) and prefills a chunk of ``prefill_chunk`` tokens for each of
    ``prefill_seqs`` sequences that already have ``prefill_past`` tokens cached (chunked
    prefill). Counts may be fractional: the batching model works with steady-state averages.
    A plain prefill is ``prefill_past=0``; a plain decode step has no prefill part.
    """
    h, q, kv, L = spec.hidden, spec.q_dim, spec.kv_dim, spec.layers
    ab = prec.activation_bytes
    bpw = prec.bytes_per_weight
    kvb = kv_bytes_per_element(kv_precision)
    T = decode_seqs + prefill_seqs * prefill_chunk  # tokens through the linear layers
    kv_share = 1 / min(tp, spec.kv_heads)  # KV heads replicate when tp > kv_heads
    mixed = decode_seqs > 0 and prefill_seqs > 0
    ops: list[Op] = []

    def linear(name: str, n_in: int, n_out: int, layers: int = L) -> Op:
        flops = 2 * T * n_in * n_out * layers / tp
        moved = (n_in * n_out * bpw + T * (n_in + n_out) * ab) * layers / tp
        return Op(name, flops, moved, quantized_weights=prec.is_quantized, kind="gemm", tokens=T,
                  kernels=layers)

    ops.append(linear("qkv_proj", h, q + 2 * kv))
    # Attention core: QK^T and softmax(S)V, 2 FLOPs per MAC each.
    slide, full = (spec.sliding_layers, L - spec.sliding_layers) if spec.sliding_window else (0, L)
    for label, n_layers, window in (("attention", full, None), ("attention_sliding", slide, spec.sliding_window)):
        if n_layers == 0:
            continue
        if prefill_seqs > 0:
            chunk, past = prefill_chunk, prefill_past
            pairs = _attention_pairs(chunk + past, window) - _attention_pairs(past, window) if past else \
                _attention_pairs(chunk, window)
            cached = min(past, window) if window else past
            tokens = prefill_seqs * chunk
            flops = 4 * prefill_seqs * spec.heads * spec.head_dim * pairs * n_layers / tp
            moved = (tokens * (2 * q + 2 * kv) * ab + tokens * 2 * kv * kvb
                     + prefill_seqs * cached * 2 * kv * kvb) * n_layers / tp
            ops.append(Op(label + ("_prefill" if mixed else ""), flops, moved, kind="attention_prefill",
                          tokens=tokens, kernels=n_layers))
        if decode_seqs > 0:
            ctx = min(decode_context, window) if window else decode_context
            flops = 4 * decode_seqs * spec.heads * spec.head_dim * ctx * n_layers / tp
            moved = (decode_seqs * ctx * 2 * kv * kvb * kv_share
                     + decode_seqs * (2 * q + 2 * kv) * ab / tp) * n_layers
            ops.append(Op(label + ("_decode" if mixed else ""), flops, moved, kind="attention_decode",
                          tokens=decode_seqs, kernels=n_layers))
    ops.append(linear("o_proj", q, h))
    mats = 3 if spec.gated_mlp else 2
    if spec.is_moe:
        touched = _experts_touched(spec, T)
        k = spec.experts_per_token
        flops = 2 * T * k * mats * h * spec.intermediate * L / tp
        moved = (touched * mats * h * spec.intermediate * bpw
                 + T * k * (2 * h + mats * spec.intermediate) * ab) * L / tp
        # each touched expert runs its own GEMMs on its share of the tokens
        ops.append(Op("moe_experts", flops, moved, quantized_weights=prec.is_quantized, kind="moe",
                      tokens=T * k / max(touched, 1.0), kernels=L * 2))
        ops.append(Op("router", 2 * T * h * spec.experts * L, (h * spec.experts * 2 + T * h * ab) * L,
                      kind="elementwise", tokens=T, kernels=L))
    else:
        flops = 2 * T * mats * h * spec.intermediate * L / tp
        moved = (mats * h * spec.intermediate * bpw + T * (2 * h + mats * spec.intermediate) * ab) * L / tp
        ops.append(Op("mlp", flops, moved, quantized_weights=prec.is_quantized, kind="gemm", tokens=T,
                      kernels=2 * L))
    # Norms, activation and residual adds: memory-bound elementwise traffic on the residual stream.
    n_norms = spec.norms_per_layer * L + 1
    ops.append(Op("norms_residual", 5 * T * h * n_norms, 3 * T * h * ab * n_norms, kind="elementwise",
                  tokens=T, kernels=n_norms + 2 * L))
    # LM head on the last position of each sequence (logits_to_keep=1), vocab-parallel under TP.
    head_bytes = 2 if prec.dense_bytes == 2 else 4
    rows = decode_seqs + prefill_seqs
    ops.append(Op("lm_head", 2 * rows * h * spec.vocab / tp,
                  (spec.vocab * h * head_bytes + rows * (h * ab + spec.vocab * 4)) / tp, kind="gemm",
                  tokens=rows, kernels=1))
    ops.append(Op("embedding", 0.0, T * h * head_bytes, kind="elementwise", tokens=T, kernels=1))
    return ops


@dataclass(frozen=True)
class OpEfficiency:
    """How far below the roofs each kind of operation runs (see ``Factors``).

    compute: share of peak FLOP/s a large GEMM reaches; ``dtype_scale`` multiplies it per
    compute dtype (fp8/int8 tensor-core paths reach a smaller share than bf16);
    ``gemm_half_tokens``: the GEMM M (tokens) at which compute efficiency is half of it (small
    GEMMs fill few tiles); ``attention``: share of peak of the prefill attention kernel;
    ``memory``: share of peak bandwidth; ``kernel_us``: fixed cost of each kernel launch (norms,
    activations and other small ops are not free at tiny token counts) in a decode-only step,
    which serving engines replay as a CUDA graph; ``prefill_kernel_us`` (None: the same): in a
    step that prefills, which they launch kernel by kernel; ``moe``: what share of the dense
    GEMMs' compute efficiency the grouped expert GEMMs of a mixture-of-experts layer reach
    (``moe_dtype_scale`` on top, for their compute dtype), and ``moe_memory`` what share of the
    memory efficiency they read their weights at.
    """

    compute: float
    memory: float
    dtype_scale: float = 1.0
    gemm_half_tokens: float = 0.0
    attention: float | None = None
    kernel_us: float = 0.0
    prefill_kernel_us: float | None = None  # a step that prefills runs eagerly (no CUDA graph): its launches
    moe: float = 1.0  # grouped expert GEMMs: share of the dense GEMMs' compute efficiency
    moe_memory: float | None = None  # ... and of their memory efficiency reading expert weights (None: moe)
    moe_dtype_scale: float = 1.0  # grouped expert GEMMs in this compute dtype (fp8 kernels lag the dense ones)
    gemm_table: Any = None  # measured GEMM share of peak vs M (operator_data.GemmTable): replaces the roofs

    def gemm_compute(self, tokens: float) -> float:
        eff = self.compute * self.dtype_scale
        if self.gemm_half_tokens > 0 and tokens > 0:
            eff *= tokens / (tokens + self.gemm_half_tokens)
        return eff


def phase_time(name: str, ops: list[Op], gpu: GPU, prec: Precision, tp: int, tokens: int, hidden: int,
               layers: int, compute_eff: float, memory_eff: float, overhead_ms: float,
               quant_memory_eff: float, allreduce_latency_us: float, link_eff: float,
               extra_ms: float = 0.0, floor_ms: float = 0.0, op_eff: OpEfficiency | None = None,
               attention_dtype: str | None = None, eager_share: float | None = None) -> PhaseResult:
    """Roofline time of one phase on one GPU (all ops + all-reduces + overhead).

    Without ``op_eff`` every op runs at ``compute_eff`` / ``memory_eff`` of the roofs; with it,
    each op's efficiency depends on its kind, dtype and token count, and each kernel launch
    costs ``op_eff.kernel_us``. Attention runs at the peak of ``attention_dtype`` (16-bit
    unless the KV cache is fp8), GEMMs at the weights' compute dtype. ``eager_share``: the share
    of such steps that prefill and so launch their kernels one by one (``prefill_kernel_us``);
    None: all of them when the ops prefill, none otherwise. A steady-state step of the batching
    model carries a fraction of a prompt: only that share of real steps holds a prefill.
    """
    peak = gpu.peak_flops(prec.compute)
    if peak <= 0:
        peak = gpu.peak_flops("fp16")  # no tensor cores for this dtype: fall back (caller warns)
    attn_peak = gpu.peak_flops(attention_dtype) if attention_dtype else peak
    if attn_peak <= 0:
        attn_peak = gpu.peak_flops("fp16") or peak
    bw = gpu.memory_bandwidth
    kernel_us = 0.0
    if op_eff is not None:
        if eager_share is None:
            eager_share = 1.0 if any(op.kind == "attention_prefill" for op in ops) else 0.0
        eager_us = op_eff.kernel_us if op_eff.prefill_kernel_us is None else op_eff.prefill_kernel_us
        kernel_us = op_eff.kernel_us + (eager_us - op_eff.kernel_us) * min(max(eager_share, 0.0), 1.0)
    total_ms = compute_ms = memory_ms = launch_ms = 0.0
    flops = moved = 0.0
    rows = []
    for op in ops:
        mem_eff = memory_eff * (quant_memory_eff if op.quantized_weights else 1.0)
        if op_eff is not None and op.kind == "moe":
            mem_eff *= op_eff.moe if op_eff.moe_memory is None else op_eff.moe_memory
        if op_eff is None:
            c = op.flops / (peak * compute_eff) * 1e3
        elif op.kind in ("gemm", "moe") and op_eff.gemm_table is not None:
            # measured GEMM time (weights read and math together): no separate memory roof
            share = share_of_peak(op_eff.gemm_table, op.tokens) * (op_eff.moe if op.kind == "moe" else 1.0)
            c = op.flops / (peak * share) * 1e3 if op.flops else 0.0
            m = 0.0
        elif op.kind in ("gemm", "moe"):
            moe = op_eff.moe * op_eff.moe_dtype_scale if op.kind == "moe" else 1.0
            c = op.flops / (peak * op_eff.gemm_compute(op.tokens) * moe) * 1e3
        elif op.kind == "attention_prefill":
            c = op.flops / (attn_peak * (op_eff.attention or op_eff.compute)) * 1e3
        else:
            c = op.flops / (attn_peak * op_eff.compute) * 1e3
        if not (op_eff is not None and op_eff.gemm_table is not None and op.kind in ("gemm", "moe")):
            m = op.bytes / (bw * mem_eff) * 1e3
        t = max(c, m)
        if kernel_us:
            launch = op.kernels * kernel_us / 1e3
            launch_ms += launch
            t += launch
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
        # Two all-reduces of the residual stream per layer (after attention and after the MLP): a
        # ring moves 2 (tp - 1) / tp of the message over each GPU's link, plus a fixed latency (its
        # kernel launch included: nccl-tests time whole calls).
        size = tokens * hidden * prec.activation_bytes
        per = 2 * (tp - 1) / tp * size / (gpu.interconnect_bandwidth * link_eff) * 1e3 + allreduce_latency_us / 1e3
        comm_ms = 2 * layers * per
    # A calibrated host-bound floor (eager frameworks) caps how fast a step can be launched.
    latency = max(total_ms + comm_ms, floor_ms) + overhead_ms + extra_ms
    return PhaseResult(name=name, flops=flops, bytes=moved, latency_ms=latency, compute_ms=compute_ms,
                       memory_ms=memory_ms, comm_ms=comm_ms, overhead_ms=overhead_ms + extra_ms,
                       threshold=peak / bw, ops=rows, launch_ms=launch_ms)
