"""Continuous (in-flight) batching: the output tokens/s one option sustains, and TTFT/TPOT there.

vLLM, SGLang and TensorRT-LLM do not run one static batch: every forward step decodes one
token for each running sequence and fills the rest of a per-step token budget with chunks of
waiting prompts (chunked prefill), so prefill and decode share the weights read of one step.
This module models that engine in steady state, the way benchmark clients load it: ``batch``
requests in flight (a closed loop: a finished request is replaced by a new one).

For a prompt of P tokens and O output tokens:

- each request needs P prefill tokens and O - 1 decode steps, and yields O output tokens;
- a step decodes ``d`` sequences and prefills ``c = d * P / (O - 1)`` tokens, within the
  budget (``d + c <= token_budget``); when the budget binds, the step is prefill-bound and the
  other sequences wait;
- a step's time is the roofline of that mixed step (:func:`roofline.build_step_ops`: the GEMMs
  run over ``d + c`` tokens, decode attention reads each sequence's KV cache, the prompt chunk
  attends to its past);
- requests finish at ``d / ((O - 1) * step)`` per second; by Little's law over a request's life
  (``batch = rate x (TTFT + (O - 1) * step)``) the time to first token at that load follows, and
  it includes the time spent waiting for the budget (queueing).

The sweep doubles the batch until the KV cache (paged: a sequence holds P + O/2 tokens on
average, or P + O where the engine reserves a request's whole length; ``Factors.kv_output_share``)
no longer fits, and the best point is the option's max throughput. Averages may be
fractional (a fluid model); at batch 1 the TTFT is floored by the time to prefill the whole
prompt in budget-sized chunks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rightsizer.errors import NoFeasibleOption
from rightsizer.precisions import Precision
from rightsizer.sizing.calibration import Factors
from rightsizer.sizing.catalog import GPU
from rightsizer.sizing.memory import activation_bytes, kv_bytes_per_sequence, weights_bytes
from rightsizer.sizing.params import ModelSpec, ParamCount
from rightsizer.sizing.roofline import OpEfficiency, PhaseResult, build_step_ops, phase_time

MAX_SEQS = 2048  # engines cap sequences in flight (TensorRT-LLM max_batch_size 2048; vLLM max_num_seqs)


@dataclass(frozen=True)
class ServingPoint:
    """The steady state with ``batch`` requests in flight."""

    batch: int
    decode_seqs: float  # sequences decoding in an average step
    prefill_tokens: float  # prompt tokens prefilled in an average step
    step_ms: float  # one mixed step: the time per output token a running sequence sees
    output_tokens_per_s: float
    requests_per_s: float
    ttft_ms: float  # at this load, waiting for the budget included
    tpot_ms: float
    bound: str  # prefill (budget), compute, memory, overhead (small steps)

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "decode_seqs": self.decode_seqs, "prefill_tokens": self.prefill_tokens,
                "step_ms": self.step_ms, "output_tokens_per_s": self.output_tokens_per_s,
                "requests_per_s": self.requests_per_s, "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms,
                "bound": self.bound}


@dataclass
class ServingCurve:
    """A batch sweep of one option under continuous batching, and its best point."""

    token_budget: int
    max_batch: int  # sequences the KV cache holds (paged, average length)
    points: list[ServingPoint] = field(default_factory=list)

    @property
    def best(self) -> ServingPoint:
        return max(self.points, key=lambda p: p.output_tokens_per_s)

    @property
    def limit(self) -> str:
        """What stops the throughput rising: the KV cache, the prefill budget, or the step's roof."""
        best = self.best
        if best.bound == "prefill":
            return "prefill"
        if best.batch >= min(self.max_batch, MAX_SEQS):
            return "kv-memory" if self.max_batch < MAX_SEQS else "max-sequences"
        return best.bound

    def point(self, batch: int) -> ServingPoint | None:
        """The swept point with exactly ``batch`` in flight (the sweep includes the workload's)."""
        return next((p for p in self.points if p.batch == batch), None)

    def to_dict(self, with_points: bool = True) -> dict[str, Any]:
        best = self.best
        d = {"token_budget": self.token_budget, "max_batch": self.max_batch, "best_batch": best.batch,
             "max_throughput_tokens_per_s": best.output_tokens_per_s, "ttft_ms_at_max": best.ttft_ms,
             "tpot_ms_at_max": best.tpot_ms, "bound": best.bound, "limit": self.limit}
        if with_points:
            d["points"] = [p.to_dict() for p in self.points]
        return d


@dataclass(frozen=True)
class StepModel:
    """Everything a mixed step's roofline needs besides its token counts."""

    spec: ModelSpec
    prec: Precision
    kv: str
    gpu: GPU
    count: int
    compute_eff: float
    memory_eff: float
    overhead_ms: float
    quant_memory_eff: float
    factors: Factors
    op_eff: OpEfficiency | None
    attention_dtype: str | None
    extra_ms: float = 0.0
    floor_ms: float = 0.0
    prefill_layer_ms: float = 0.0  # a calibrated device's host cost per layer (Factors.layer_costs_for)
    decode_layer_ms: float = 0.0

    def step(self, decode_seqs: float, decode_context: float, prefill_tokens: float, prompt: int) -> PhaseResult:
        if prefill_tokens >= prompt:
            pf = dict(prefill_seqs=prefill_tokens / prompt, prefill_chunk=prompt, prefill_past=0)
        elif prefill_tokens > 0:  # one prompt in chunks: on average half of the rest is cached
            pf = dict(prefill_seqs=1, prefill_chunk=prefill_tokens, prefill_past=(prompt - prefill_tokens) / 2)
        else:
            pf = {}
        ops = build_step_ops(self.spec, self.prec, self.kv, self.count, decode_seqs=decode_seqs,
                             decode_context=decode_context, **pf)
        tokens = max(1, int(math.ceil(decode_seqs + prefill_tokens)))
        # A steady-state step carries prefill_tokens / prompt prompts on average, and each prompt
        # takes ceil(prompt / budget) real steps: that share of the real steps prefills (their
        # kernels launched one by one), the rest decode from a CUDA graph.
        per_prompt = max(1, math.ceil(prompt / self.factors.token_budget))
        eager = min(1.0, prefill_tokens / prompt * per_prompt) if prompt > 0 else 0.0
        # a calibrated device's host cost per layer: a prefill step's in the share of steps that prefill
        layer_ms = self.decode_layer_ms + (self.prefill_layer_ms - self.decode_layer_ms) * eager
        if not self.factors.decode_cuda_graphs:  # the engine launches every step kernel by kernel
            eager = 1.0
        seqs = decode_seqs + (max(1.0, prefill_tokens / prompt) if prefill_tokens > 0 and prompt > 0 else 0.0)
        hidden, serial = host_split_ms(self.factors, self.gpu, seqs)
        floor = max(self.floor_ms, hidden)
        return phase_time("step", ops, self.gpu, self.prec, self.count, tokens=tokens, hidden=self.spec.hidden,
                          layers=self.spec.layers, compute_eff=self.compute_eff, memory_eff=self.memory_eff,
                          overhead_ms=self.overhead_ms, quant_memory_eff=self.quant_memory_eff,
                          allreduce_latency_us=self.factors.allreduce_latency_us,
                          link_eff=self.factors.link_efficiency,
                          extra_ms=self.extra_ms + self.spec.layers * layer_ms + serial,
                          floor_ms=floor,
                          op_eff=self.op_eff, attention_dtype=self.attention_dtype, eager_share=eager)


def host_floor_ms(factors: Factors, gpu: GPU, seqs: float) -> float:
    """The host's time for one step of ``seqs`` sequences on a GPU (scheduling, preparing the
    inputs, sampling, detokenising), hidden under the GPU's work or added to it as the engine's
    ``host_overlap`` says (``host_split_ms``). It decides small models' steps, which the GPU runs in less.
    0 on a CPU device, whose eager steps are the host's work already (``cpu_step_overhead_ms``),
    and on a calibrated GPU, whose fitted floors and per-layer costs measured its engine's host."""
    if gpu.is_cpu or gpu.name in factors.per_gpu:
        return 0.0
    return factors.host_step_ms + factors.host_seq_us * seqs / 1e3


def host_split_ms(factors: Factors, gpu: GPU, seqs: float) -> tuple[float, float]:
    """``host_floor_ms`` split by the engine's ``host_overlap``: (the part a step hides under the
    GPU's work, a floor; the part it adds after it)."""
    host = host_floor_ms(factors, gpu, seqs)
    return host * factors.host_overlap, host * (1.0 - factors.host_overlap)


def request_costs_ms(factors: Factors, gpu: GPU) -> tuple[float, float]:
    """(front end's time per request, latency per request that holds nothing) of the engine
    the factors describe; 0 on a CPU device (its factors are eager PyTorch's, no server) and on a
    calibrated GPU (calibrated on the engine's own timings, without a server)."""
    if gpu.is_cpu or gpu.name in factors.per_gpu:
        return 0.0, 0.0
    return factors.front_end_ms, factors.server_latency_ms


def kv_max_batch(spec: ModelSpec, params: ParamCount, prec: Precision, kv: str, gpu: GPU, count: int,
                 prompt: int, output: int, factors: Factors, token_budget: int) -> int:
    """Sequences in flight the memory holds: weights, one step's activations and the reserve
    first, then a paged KV cache of P + ``kv_output_share`` x O tokens per sequence: its average
    length (P + O/2) where blocks are allocated as tokens arrive (vLLM, SGLang), its whole length
    (P + O) where the scheduler reserves a request's blocks at admission (TensorRT-LLM's
    GUARANTEED_NO_EVICT). The KV bytes per token follow the KV dtype: an fp8 cache holds twice
    the sequences of a 16-bit one."""
    share = 1 / min(count, spec.kv_heads)
    reserve = factors.reserve_bytes + factors.reserve_fraction * gpu.memory_bytes
    act = activation_bytes(spec, 1, min(token_budget, prompt + output), prec)
    free = gpu.memory_bytes - weights_bytes(params, prec) / count - reserve - act
    held = prompt + max(1, int(output * factors.kv_output_share))
    per_seq = kv_bytes_per_sequence(spec, held, kv) * share
    return max(0, int(free // per_seq)) if per_seq > 0 else 0


def serving_point(model: StepModel, batch: int, prompt: int, output: int, budget: int) -> ServingPoint:
    """The closed-loop steady state with ``batch`` requests in flight."""
    P, O, B = prompt, output, batch  # noqa: E741 (the formulas' names)
    if O <= 1:  # prefill only: each step fills the budget with whole or chunked prompts
        c = float(min(budget, B * P))
        res = model.step(0, 0, c, P)
        step = res.latency_ms
        rate = c / P / (step / 1e3)
        ttft = max(B / rate * 1e3, step * math.ceil(P / budget))
        return ServingPoint(B, 0.0, c, step, rate * O, rate, ttft, 0.0,
                            "prefill" if B * P >= budget else res.bound)
    decode_steps = O - 1
    ctx = P + O / 2
    # a request spends its prefill steps (its prompt in chunks of the free budget) out of decode
    d = float(B)
    for _ in range(8):
        steps = max(1.0, P / max(1.0, budget - d))
        d = B / (1 + steps / decode_steps)
    budget_cap = budget * decode_steps / (decode_steps + P)
    prefill_bound = d > budget_cap
    d = min(d, budget_cap)
    c = d * P / decode_steps
    res = model.step(d, ctx, c, P)
    step = res.latency_ms
    rate = d / (decode_steps * step / 1e3)
    front_ms, _ = request_costs_ms(model.factors, model.gpu)
    bound = "prefill" if prefill_bound else res.bound
    if front_ms > 0 and rate > 1e3 / front_ms:  # the server's front end takes requests one at a time
        rate, bound = 1e3 / front_ms, "front-end"
    little = B / rate * 1e3 - decode_steps * step  # Little's law: in flight = rate x life
    chunk = min(P, max(1.0, budget - d))
    alone = math.ceil(P / chunk) * model.step(d, ctx, chunk, P).latency_ms  # its own prompt, in chunks
    ttft = max(little, alone)
    return ServingPoint(B, d, c, step, rate * O, rate, ttft, step, bound)


def _batches(limit: int) -> list[int]:
    out, b = [], 1
    while b < limit:
        out.append(b)
        b *= 2
    out.append(limit)
    return out


def serving_curve(model: StepModel, params: ParamCount, prompt: int, output: int,
                  token_budget: int | None = None, batch: int | None = None) -> ServingCurve:
    """The batch sweep 1, 2, 4, ... up to what the KV cache holds (and ``batch`` itself).

    NoFeasibleOption when not one sequence fits beside the weights.
    """
    budget = int(token_budget or model.factors.token_budget)
    max_b = kv_max_batch(model.spec, params, model.prec, model.kv, model.gpu, model.count, prompt, output,
                         model.factors, budget)
    if max_b < 1:
        raise NoFeasibleOption(
            f"{model.spec.name} {model.prec.name} on {model.count}x {model.gpu.label}: the weights, reserve and "
            f"one step's activations leave no room for the KV cache of one {prompt}+{output}-token sequence")
    limit = min(max_b, MAX_SEQS)
    sizes = sorted(set(_batches(limit) + ([min(batch, limit)] if batch else [])))
    return ServingCurve(budget, max_b, [serving_point(model, b, prompt, output, budget) for b in sizes])


__all__ = ["request_costs_ms", "host_floor_ms", "host_split_ms", "MAX_SEQS", "ServingCurve", "ServingPoint", "StepModel", "kv_max_batch", "serving_curve", "serving_point"]
