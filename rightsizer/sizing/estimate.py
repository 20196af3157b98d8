"""One estimate: memory plan, fit, prefill/decode roofline, TTFT, TPOT, throughput and cost."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from rightsizer.errors import ConfigError, NoFeasibleOption
from rightsizer.precisions import Precision, get_precision, kv_bytes_per_element
from rightsizer.sizing.batching import (MAX_SEQS, ServingCurve, StepModel, host_split_ms, kv_max_batch,
                                       request_costs_ms, serving_curve, serving_point)
from rightsizer.sizing.calibration import Factors
from rightsizer.sizing.catalog import GPU, Catalog, default_catalog
from rightsizer.sizing.memory import (
    activation_bytes, default_kv_precision, kv_bytes_per_sequence, kv_bytes_per_token, weights_bytes)
from rightsizer.sizing.params import ModelSpec, ParamCount, count_spec, model_spec
from rightsizer.sizing.roofline import PhaseResult, build_ops, phase_time
from rightsizer.sizing.traffic import Lengths, TailFigures, max_rate, simulate

TP_COUNTS = (1, 2, 4, 8)
MAX_TAIL_REQUESTS = 4000  # a tail simulation's bound (about 0.3 s)
SEARCH_REQUESTS = 300  # per simulation of a search for the rate held within the p95 targets


@dataclass(frozen=True)
class Workload:
    """What one replica serves.

    prompt_tokens: input tokens per request (prefill length).
    output_tokens: generated tokens per request.
    batch: concurrent sequences decoded together.
    precision: weight precision (fp32, bf16, fp16, fp8, int8, int4, int4-gN, nf4).
    kv_precision: KV-cache dtype; None keeps the activation dtype (bf16, or fp32 for fp32).
    """

    prompt_tokens: int
    output_tokens: int
    batch: int = 1
    precision: str = "bf16"
    kv_precision: str | None = None

    def __post_init__(self) -> None:
        problems = []
        for name in ("prompt_tokens", "output_tokens", "batch"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                problems.append(f"{name} must be a positive integer, got {v!r} (--{name.replace('_', '-')})")
        try:
            get_precision(self.precision)
        except ConfigError as exc:
            problems.extend(exc.problems)
        if self.kv_precision is not None:
            try:
                kv_bytes_per_element(self.kv_precision)
            except ConfigError as exc:
                problems.extend(exc.problems)
        if problems:
            raise ConfigError(problems, source="workload")

    @classmethod
    def of(cls, shape: Any, precision: str = "bf16") -> "Workload":
        """The sizing input for a task spec's ``workload`` section (``rightsizer.schema.task.
        Workload``: the typical request) served at ``precision``: the one conversion."""
        return cls(prompt_tokens=shape.prompt_tokens, output_tokens=shape.output_tokens, batch=shape.batch,
                   precision=precision)

    @property
    def kv(self) -> str:
        return self.kv_precision or default_kv_precision(self.precision)

    def with_(self, **changes: Any) -> "Workload":
        data = {"prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens, "batch": self.batch,
                "precision": self.precision, "kv_precision": self.kv_precision}
        data.update(changes)
        return Workload(**data)


@dataclass
class Estimate:
    """Everything the sizing engine knows about one (model, GPU x count or MIG slice, workload)."""

    model: str
    architecture: str
    gpu: str
    count: int
    mig: str | None
    precision: str
    kv_precision: str
    batch: int
    prompt_tokens: int
    output_tokens: int
    mode: str
    params: ParamCount
    weights_bytes: int
    kv_bytes_per_token: int
    kv_bytes: int
    activation_bytes: int
    reserve_bytes: int
    memory_per_gpu_bytes: int
    gpu_memory_bytes: int
    fits: bool
    min_gpus: int | None
    max_batch: int
    max_context: int
    prefill: PhaseResult
    decode: PhaseResult
    ttft_ms: float
    tpot_ms: float
    throughput_tokens_per_s: float
    request_latency_ms: float
    price_per_hour: float
    cost_per_1m_output_tokens: float
    offload: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    max_throughput_tokens_per_s: float = 0.0  # best output tokens/s under continuous batching
    ttft_at_load_ms: float = 0.0  # with ``batch`` requests in flight, continuous batching (queueing included)
    tpot_at_load_ms: float = 0.0  # one mixed step (decodes + a prompt chunk) with ``batch`` in flight
    serving: ServingCurve | None = field(default=None, repr=False)  # the batch sweep behind it
    server_ms: float = 0.0  # the server's time per request a client sees in its TTFT (front end + latency)
    step_model: StepModel | None = field(default=None, repr=False)  # one step's time: what ``tail`` simulates

    @property
    def served_ttft_ms(self) -> float:
        """TTFT a request sees with ``batch`` in flight under continuous batching (its prompt in
        budget-sized chunks beside the running decodes, waiting included). SLO checks use this;
        ``ttft_ms`` is the static batch, every prompt arriving at once. Both without the
        server's time per request (``server_ms``), which this adds: what a client sees."""
        return (self.ttft_at_load_ms or self.ttft_ms) + self.server_ms

    @property
    def served_tpot_ms(self) -> float:
        """TPOT a running sequence sees with ``batch`` in flight (a decode step, or a mixed step
        that also carries a prompt chunk, whichever is longer). SLO checks use this."""
        return max(self.tpot_ms, self.tpot_at_load_ms)

    @property
    def memory_bytes(self) -> int:
        """Total memory needed across all GPUs of this option."""
        return self.memory_per_gpu_bytes * self.count

    def to_dict(self, with_ops: bool = False) -> dict[str, Any]:
        return {
            "model": self.model, "architecture": self.architecture, "gpu": self.gpu, "count": self.count,
            "mig": self.mig, "precision": self.precision, "kv_precision": self.kv_precision,
            "batch": self.batch, "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens,
            "mode": self.mode, "params_total": self.params.total, "params_active": self.params.active,
            "weights_bytes": self.weights_bytes, "kv_bytes_per_token": self.kv_bytes_per_token,
            "kv_bytes": self.kv_bytes, "activation_bytes": self.activation_bytes,
            "reserve_bytes": self.reserve_bytes, "memory_bytes": self.memory_bytes,
            "memory_per_gpu_bytes": self.memory_per_gpu_bytes, "gpu_memory_bytes": self.gpu_memory_bytes,
            "fits": self.fits, "min_gpus": self.min_gpus, "max_batch": self.max_batch,
            "max_context": self.max_context,
            "prefill": self.prefill.to_dict(with_ops), "decode": self.decode.to_dict(with_ops),
            "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms,
            "throughput_tokens_per_s": self.throughput_tokens_per_s,
            "request_latency_ms": self.request_latency_ms, "price_per_hour": self.price_per_hour,
            "cost_per_1m_output_tokens": self.cost_per_1m_output_tokens, "offload": self.offload,
            "warnings": list(self.warnings),
            "max_throughput_tokens_per_s": self.max_throughput_tokens_per_s,
            "ttft_at_load_ms": self.ttft_at_load_ms, "tpot_at_load_ms": self.tpot_at_load_ms,
            "server_ms": self.server_ms,
            "serving": self.serving.to_dict(with_points=with_ops) if self.serving else None,
        }


def unique_deployments(items: Iterable) -> list:
    """The first of each deployment (gpu, count, MIG slice, precision), in order.

    Estimates and recommendation options both carry these four; the same one can appear
    twice (bf16 falls back to fp16 on Turing, or a caller passes duplicates).
    """
    seen, out = set(), []
    for item in items:
        key = (item.gpu, item.count, item.mig, item.precision)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


# --------------------------------------------------------------------------- memory plan


@dataclass(frozen=True)
class _Plan:
    weights: int
    kv_total: int
    act: int
    reserve: int
    per_gpu: int
    fits: bool


def _kv_share(spec: ModelSpec, count: int) -> float:
    return 1 / min(count, spec.kv_heads)


def _plan(spec: ModelSpec, params: ParamCount, prec: Precision, kv: str, gpu: GPU, count: int,
          batch: int, prompt: int, output: int, factors: Factors) -> _Plan:
    w = weights_bytes(params, prec)
    kv_total = batch * kv_bytes_per_sequence(spec, prompt + output, kv)
    act = activation_bytes(spec, batch, prompt, prec)
    reserve = int(factors.reserve_bytes + factors.reserve_fraction * gpu.memory_bytes)
    per_gpu = int(math.ceil(w / count + kv_total * _kv_share(spec, count) + act + reserve))
    return _Plan(w, kv_total, act, reserve, per_gpu, per_gpu <= gpu.memory_bytes)


def _max_batch(spec, params, prec, kv, gpu, count, prompt, output, factors) -> int:
    one = _plan(spec, params, prec, kv, gpu, count, 1, prompt, output, factors)
    free = gpu.memory_bytes - (one.per_gpu - one.kv_total * _kv_share(spec, count) - one.act)
    per_seq = one.kv_total * _kv_share(spec, count) + one.act
    return max(0, int(free // per_seq)) if per_seq > 0 else 0


def _max_context(spec, params, prec, kv, gpu, count, batch, factors) -> int:
    lo, hi = 0, 1 << 24
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if _plan(spec, params, prec, kv, gpu, count, batch, mid, 0, factors).fits:
            lo = mid
        else:
            hi = mid - 1
    return lo


def tp_problem(spec: ModelSpec, gpu: GPU, count: int) -> str:
    """Why ``count`` GPUs cannot hold ``spec`` tensor-parallel on one node ("" when they can)."""
    if count > gpu.max_count:
        return f"{count}x {gpu.name} exceeds max_count {gpu.max_count} per node"
    if count > 1 and spec.heads % count:
        return f"tensor parallel {count} does not divide {spec.heads} attention heads"
    return ""


def min_gpus(spec, params, prec, kv, gpu, prompt, output, batch, factors) -> int | None:
    for n in TP_COUNTS:
        if tp_problem(spec, gpu, n):
            continue
        if _plan(spec, params, prec, kv, gpu, n, batch, prompt, output, factors).fits:
            return n
    return None


# --------------------------------------------------------------------------- estimate


def _resolve_gpu(gpu: str | GPU, mig: str | None, catalog: Catalog | None) -> GPU:
    base = gpu if isinstance(gpu, GPU) else (catalog or default_catalog()).get(gpu)
    if mig:
        return base.slice(mig) if base.mig is None else base
    return base


def estimate(config: Any, gpu: str | GPU, workload: Workload, count: int = 1, mig: str | None = None,
             factors: Factors | None = None, *, catalog: Catalog | None = None,
             spec: ModelSpec | None = None, params: ParamCount | None = None) -> Estimate:
    """Estimate memory, fit, TTFT, TPOT, throughput and cost of serving ``config`` on
    ``count`` x ``gpu`` (tensor parallel) or on one MIG slice ``mig`` of it."""
    if not isinstance(workload, Workload):
        raise ConfigError(f"workload must be a Workload, got {type(workload).__name__}")
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ConfigError(f"count must be a positive integer, got {count!r}")
    spec = spec or model_spec(config)
    params = params or count_spec(spec)
    factors = factors or Factors.defaults(catalog)
    g = _resolve_gpu(gpu, mig, catalog)
    if g.mig and count != 1:
        raise ConfigError(f"a MIG slice ({g.mig}) is one device: count must be 1, got {count}")
    prec = get_precision(workload.precision)
    kv = workload.kv
    warnings: list[str] = []
    problem = tp_problem(spec, g, count)
    if problem:
        raise ConfigError(problem)
    if prec.feature and not g.supports(prec.feature):
        warnings.append(f"{g.name} lacks {prec.feature} support for {prec.name}; latency assumes fallback kernels")
    if kv == "fp8" and not g.supports("fp8"):
        warnings.append(f"{g.name} has no fp8 support for an fp8 KV cache")
    if not g.is_cpu and not g.supports("flash_attention_2"):
        warnings.append(f"{g.name} (cc {g.compute_capability}) has no FlashAttention-2; SDPA kernels assumed")

    P, O, B = workload.prompt_tokens, workload.output_tokens, workload.batch  # noqa: E741 (the formulas' names)
    if spec.max_positions and P + O > spec.max_positions:
        warnings.append(f"prompt + output = {P + O} exceeds the model's max_position_embeddings {spec.max_positions}")
    plan = _plan(spec, params, prec, kv, g, count, B, P, O, factors)
    ce, me, overhead, mode = factors.for_gpu(g.name, g.kind)
    qme = factors.quant_memory_efficiency.get(prec.kernel, 1.0) if prec.kernel else 1.0

    offload = None
    extra_ms = 0.0
    if not g.priced:
        warnings.append(f"{g.name} has no price in the price list{' ' + catalog.price_list_name if catalog else ''}: "
                        "price and cost are unknown (give one with --price / extra)")
    if not plan.fits and g.is_cpu:
        warnings.append(f"needs {plan.per_gpu / 2**30:.1f} GiB, {g.name} has {g.memory_bytes / 2**30:.1f} GiB of RAM")
    elif not plan.fits:
        offloaded = plan.per_gpu - g.memory_bytes
        extra_ms = offloaded / (g.host_link_bandwidth * factors.link_efficiency) * 1e3
        offload = {"offloaded_bytes_per_gpu": offloaded, "host_link_bandwidth": g.host_link_bandwidth,
                   "added_ms_per_step": extra_ms,
                   "note": "weights that do not fit stream from host RAM over PCIe on every forward step"}
        warnings.append(f"needs {plan.per_gpu / 2**30:.1f} GiB per GPU, {g.label} has "
                        f"{g.memory_bytes / 2**30:.1f} GiB; CPU offload adds {extra_ms:.0f} ms per step")

    op_eff = factors.op_efficiency(g.name, prec.compute, g.kind, prec.name)
    if op_eff is not None and op_eff.gemm_table is not None:
        mode = "operator-data"
    attention_dtype = _attention_dtype(prec, kv, g)
    common = dict(gpu=g, prec=prec, tp=count, hidden=spec.hidden, layers=spec.layers, compute_eff=ce,
                  memory_eff=me, overhead_ms=overhead, quant_memory_eff=qme,
                  allreduce_latency_us=factors.allreduce_latency_us, link_eff=factors.link_efficiency,
                  op_eff=op_eff, attention_dtype=attention_dtype)
    prefill_floor, decode_floor = factors.floors_for(g.name)
    host_hidden, host_serial = host_split_ms(factors, g, B)
    prefill_floor = max(prefill_floor, host_hidden)
    prefill_layer, decode_layer = factors.layer_costs_for(g.name)
    prefill = phase_time("prefill", build_ops(spec, prec, kv, B, P, P, "prefill", count), tokens=B * P,
                         floor_ms=prefill_floor, extra_ms=extra_ms + spec.layers * prefill_layer + host_serial, **common)
    # TPOT at the last generated token (the slowest step: longest KV read), for p95 SLO checks.
    decode = phase_time("decode", build_ops(spec, prec, kv, B, 1, P + O - 1, "decode", count), tokens=B,
                        floor_ms=max(decode_floor, host_hidden), eager_share=None if factors.decode_cuda_graphs else 1.0,
                        extra_ms=extra_ms + spec.layers * decode_layer + host_serial, **common)
    ttft = prefill.latency_ms
    tpot = decode.latency_ms
    request_ms = ttft + (O - 1) * tpot
    # Throughput under continuous batching (prefill included), with the workload's batch in flight,
    # and the best the option reaches before its KV cache is full.
    step_model = StepModel(spec=spec, prec=prec, kv=kv, gpu=g, count=count, compute_eff=ce, memory_eff=me,
                           overhead_ms=overhead, quant_memory_eff=qme, factors=factors, op_eff=op_eff,
                           attention_dtype=attention_dtype, extra_ms=extra_ms, floor_ms=decode_floor,
                           prefill_layer_ms=prefill_layer, decode_layer_ms=decode_layer)
    try:
        curve = serving_curve(step_model, params, P, O, batch=B)
    except NoFeasibleOption as exc:  # not one sequence fits beside the weights: no throughput to offer
        curve = None
        warnings.append(str(exc))
    if curve is not None and B <= curve.max_batch:
        # swept already, unless the batch is above what one engine takes (MAX_SEQS)
        at_batch = curve.point(B) or serving_point(step_model, B, P, O, curve.token_budget)
        throughput, ttft_load, tpot_load = at_batch.output_tokens_per_s, at_batch.ttft_ms, at_batch.tpot_ms
    else:  # a static batch that does not fit: for the record only
        throughput, ttft_load, tpot_load = B * O / (request_ms / 1e3), ttft, tpot
    max_throughput = curve.best.output_tokens_per_s if curve else 0.0
    price = g.price_per_hour * count
    cost = price / (throughput * 3600) * 1e6 if throughput > 0 else math.inf
    return Estimate(
        model=spec.name, architecture=spec.model_type, gpu=g.name, count=count, mig=g.mig, precision=prec.name,
        kv_precision=kv, batch=B, prompt_tokens=P, output_tokens=O, mode=mode, params=params,
        weights_bytes=plan.weights, kv_bytes_per_token=kv_bytes_per_token(spec, kv), kv_bytes=plan.kv_total,
        activation_bytes=plan.act, reserve_bytes=plan.reserve, memory_per_gpu_bytes=plan.per_gpu,
        gpu_memory_bytes=g.memory_bytes, fits=plan.fits,
        min_gpus=None if g.mig else min_gpus(spec, params, prec, kv, g, P, O, B, factors),
        max_batch=_max_batch(spec, params, prec, kv, g, count, P, O, factors),
        max_context=_max_context(spec, params, prec, kv, g, count, B, factors),
        prefill=prefill, decode=decode, ttft_ms=ttft, tpot_ms=tpot, throughput_tokens_per_s=throughput,
        request_latency_ms=request_ms, price_per_hour=price, cost_per_1m_output_tokens=cost, offload=offload,
        warnings=warnings, max_throughput_tokens_per_s=max_throughput, ttft_at_load_ms=ttft_load,
        tpot_at_load_ms=tpot_load, serving=curve, step_model=step_model, server_ms=sum(request_costs_ms(factors, g)))


def tail(est: Estimate, request_rate: float, lengths: Lengths | None = None, *, requests: int = 600,
         seed: int = 0, max_requests: int = 0, exact_requests: int = 0) -> TailFigures:
    """Mean and p95 TTFT and TPOT of one replica of ``est`` at ``request_rate`` requests/s, with
    Poisson arrivals and request lengths from ``lengths`` (the estimate's own prompt and output
    when None), through :func:`rightsizer.sizing.traffic.simulate` on this estimate's step model.
    The sequences in flight are capped by what the KV cache holds at the lengths' mean.
    ``max_requests``: bound the run (a search's many runs); default ``MAX_TAIL_REQUESTS``.
    ``exact_requests``: a benchmark's run as it was measured: that many requests, every one
    counted (no warm-up); ``request_rate`` may then be ``inf`` (all sent at once)."""
    m = est.step_model
    if m is None or est.serving is None:
        raise NoFeasibleOption(f"{est.model} on {est.count}x {est.gpu}: no serving model (nothing fits "
                               "beside the weights), so no latency under load")
    lengths = lengths or Lengths.fixed(est.prompt_tokens, est.output_tokens)
    prompt, output = max(1, round(lengths.mean(0))), max(1, round(lengths.mean(1)))
    kv_cap = kv_max_batch(m.spec, est.params, m.prec, m.kv, m.gpu, m.count, prompt, output, m.factors,
                          est.serving.token_budget)

    def step_ms(d: int, ctx: float, c: float, prompt_len: int) -> float:
        return m.step(d, ctx, c, prompt_len).latency_ms

    common = dict(token_budget=est.serving.token_budget, max_seqs=max(1, min(kv_cap, MAX_SEQS)), seed=seed,
                  **dict(zip(("front_end_ms", "server_latency_ms"), request_costs_ms(m.factors, m.gpu))))
    if exact_requests:
        return simulate(step_ms, lengths, request_rate, requests=exact_requests, warmup=0.0, **common)
    # long enough to reach the steady state: twenty request lives of arrivals (at the rate, a
    # request alone), of which the first two are the warm-up; bounded for speed
    life_s = (est.ttft_ms + max(0, output - 1) * est.tpot_ms) / 1e3
    n = int(min(max(requests, math.ceil(request_rate * 20 * life_s)), max_requests or max(requests, MAX_TAIL_REQUESTS)))
    return simulate(step_ms, lengths, request_rate, requests=n, warmup_s=2 * life_s, **common)


def held_rate(est: Estimate, ttft_ms: float, tpot_ms: float, lengths: Lengths | None = None, *, start: float,
              iterations: int = 10, requests: int = SEARCH_REQUESTS) -> float:
    """The highest request rate one replica of ``est`` holds within p95 ``ttft_ms`` and
    ``tpot_ms`` (``traffic.max_rate`` over :func:`tail`, each run bounded to ``requests``);
    0 when even a trickle misses them."""
    rate, _ = max_rate(lambda r: tail(est, r, lengths, requests=requests, max_requests=requests), ttft_ms, tpot_ms,
                       start=start, iterations=iterations)
    return rate


def _attention_dtype(prec: Precision, kv: str, gpu: GPU) -> str:
    """Attention kernels run in 16-bit (fp8 only with an fp8 KV cache on fp8 hardware), whatever the
    weights' GEMMs use; fp32 models stay fp32."""
    if prec.compute == "fp32":
        return "fp32"
    if kv == "fp8" and gpu.supports("fp8"):
        return "fp8"
    return "bf16" if gpu.supports("bf16") else "fp16"


__all__ = ["Workload", "Estimate", "estimate", "min_gpus", "tail", "held_rate", "TP_COUNTS"]
