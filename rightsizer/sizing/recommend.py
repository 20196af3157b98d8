"""Rank every option (GPU type x count, or a MIG slice, x precision) and pick the cheapest one
that fits in memory and meets the p95 TTFT, per-token latency, throughput and budget targets.

With ``traffic`` (a request rate and its length distribution) the p95 targets are checked where
users meet them: requests arriving at random (Poisson) through the scheduler simulation
(``sizing.estimate.held_rate``), and an option gets the replicas that hold the rate within them.
Without it, the closed loop at the workload's batch decides (the typical request's latency)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable

from rightsizer.units import gib
from rightsizer.errors import ConfigError, InsufficientMemory, NoFeasibleOption
from rightsizer.precisions import SEARCH_ORDER, get_precision
from rightsizer.sizing.batching import request_costs_ms
from rightsizer.sizing.calibration import Factors
from rightsizer.sizing.catalog import GPU, Catalog, default_catalog
from rightsizer.sizing.estimate import (TP_COUNTS, Estimate, Workload, estimate, held_rate, tp_problem,
                                       unique_deployments)
from rightsizer.sizing.params import ModelSpec, count_spec, load_config, model_spec
from rightsizer.sizing.traffic import Lengths

MAX_REPLICAS = 64
HELD_RATE_ITERATIONS = 6  # bisection steps for the rate a replica holds: within 2 ** (1 / 64), about 1 %


@dataclass(frozen=True)
class SLO:
    """Service-level objectives a deployment must meet.

    ttft_ms: p95 time to first token, milliseconds.
    tpot_ms: p95 time per output token after the first, milliseconds.
    throughput_tokens_per_s: aggregate output tokens/s to sustain (0: no target); met with
        bigger batches where memory and TPOT allow, then with replicas.
    budget_per_hour: maximum USD per hour for all GPUs of the option (None: no budget).
    """

    ttft_ms: float
    tpot_ms: float
    throughput_tokens_per_s: float = 0.0
    budget_per_hour: float | None = None

    def __post_init__(self) -> None:
        problems = []
        for name in ("ttft_ms", "tpot_ms"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                problems.append(f"{name} must be a positive number, got {v!r} (--{name.replace('_', '-')})")
        t = self.throughput_tokens_per_s
        if not isinstance(t, (int, float)) or isinstance(t, bool) or t < 0:
            problems.append(f"throughput_tokens_per_s must be >= 0, got {t!r} (--throughput)")
        b = self.budget_per_hour
        if b is not None and (not isinstance(b, (int, float)) or isinstance(b, bool) or not b > 0):
            problems.append(f"budget_per_hour must be a positive number, got {b!r} (--budget-per-hour)")
        if problems:
            raise ConfigError(problems, source="SLO")

    @classmethod
    def of(cls, targets: Any) -> "SLO":
        """The sizing input for a task spec's ``slo`` section (``rightsizer.schema.task.SLO``):
        the one conversion (a spec has no budget)."""
        return cls(ttft_ms=targets.ttft_ms, tpot_ms=targets.tpot_ms,
                   throughput_tokens_per_s=targets.throughput_tokens_per_s)

    def describe(self) -> str:
        parts = [f"TTFT <= {self.ttft_ms:g} ms", f"TPOT <= {self.tpot_ms:g} ms"]
        if self.throughput_tokens_per_s:
            parts.append(f"throughput >= {self.throughput_tokens_per_s:g} tok/s")
        if self.budget_per_hour is not None:
            parts.append(f"budget <= ${self.budget_per_hour:g}/h")
        return ", ".join(parts)


@dataclass(frozen=True)
class Traffic:
    """Open-loop arrivals an option must hold within the p95 targets: ``request_rate``
    requests/s, request lengths from ``lengths`` (the workload's own shape when None)."""

    request_rate: float
    lengths: Lengths | None = None

    def __post_init__(self) -> None:
        r = self.request_rate
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not (0 < r < math.inf):
            raise ConfigError(f"request_rate must be a positive number of requests/s, got {r!r}", source="traffic")


@dataclass
class Option:
    """One candidate deployment and its verdict."""

    gpu: str
    count: int
    mig: str | None
    precision: str
    batch: int
    replicas: int
    fits: bool
    meets_slo: bool
    ttft_ms: float
    tpot_ms: float
    throughput_tokens_per_s: float
    price_per_hour: float
    cost_per_1m_output_tokens: float
    memory_bytes: int
    reason: str
    mode: str
    max_throughput_tokens_per_s: float = 0.0  # continuous batching, best batch that fits (x replicas)
    # with traffic: the request rate one replica holds within the p95 targets (None: not checked)
    held_rate_per_replica: float | None = None
    estimate: Estimate | None = field(default=None, repr=False, compare=False)

    @property
    def feasible(self) -> bool:
        return self.fits and self.meets_slo and not self.reason

    @property
    def label(self) -> str:
        dev = f"{self.gpu} MIG {self.mig}" if self.mig else f"{self.count}x {self.gpu}"
        rep = f" x{self.replicas} replicas" if self.replicas > 1 else ""
        return f"{dev} {self.precision}{rep}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "gpu": self.gpu, "count": self.count, "mig": self.mig, "precision": self.precision,
            "batch": self.batch, "replicas": self.replicas, "fits": self.fits, "meets_slo": self.meets_slo,
            "feasible": self.feasible, "ttft_ms": _num(self.ttft_ms), "tpot_ms": _num(self.tpot_ms),
            "throughput_tokens_per_s": _num(self.throughput_tokens_per_s),
            "max_throughput_tokens_per_s": _num(self.max_throughput_tokens_per_s), "price_per_hour": self.price_per_hour,
            "cost_per_1m_output_tokens": _num(self.cost_per_1m_output_tokens), "memory_bytes": self.memory_bytes,
            "reason": self.reason, "mode": self.mode, "held_rate_per_replica": self.held_rate_per_replica,
        }


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


@dataclass
class Recommendation:
    """Ranked options (feasible first, cheapest first) and the chosen one."""

    chosen: Option
    options: list[Option]
    model: str
    workload: Workload
    slo: SLO
    price_list: dict[str, Any] = field(default_factory=dict)  # the list the prices come from (summary)
    model_config: dict[str, Any] | None = field(default=None, repr=False)  # the config sized (plain dict)

    @property
    def feasible(self) -> list[Option]:
        return [o for o in self.options if o.feasible]

    def to_rows(self) -> list[dict[str, Any]]:
        rows = []
        for rank, o in enumerate(self.options, 1):
            rows.append({"rank": rank, "option": o.label, **o.to_dict()})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "workload": {"prompt_tokens": self.workload.prompt_tokens, "output_tokens": self.workload.output_tokens,
                         "batch": self.workload.batch},
            "slo": {"ttft_ms": self.slo.ttft_ms, "tpot_ms": self.slo.tpot_ms,
                    "throughput_tokens_per_s": self.slo.throughput_tokens_per_s,
                    "budget_per_hour": self.slo.budget_per_hour},
            "chosen": self.chosen.to_dict(),
            "options": [o.to_dict() for o in self.options],
            "price_list": dict(self.price_list),
        }


# --------------------------------------------------------------------------- evaluation


def _option(est: Estimate, replicas: int, reason: str, meets: bool) -> Option:
    return Option(gpu=est.gpu, count=est.count, mig=est.mig, precision=est.precision, batch=est.batch,
                  replicas=replicas, fits=est.fits, meets_slo=meets, ttft_ms=est.served_ttft_ms,
                  tpot_ms=est.served_tpot_ms, max_throughput_tokens_per_s=est.max_throughput_tokens_per_s * replicas,
                  throughput_tokens_per_s=est.throughput_tokens_per_s * replicas,
                  price_per_hour=est.price_per_hour * replicas,
                  cost_per_1m_output_tokens=est.cost_per_1m_output_tokens,
                  memory_bytes=est.memory_bytes * replicas, reason=reason, mode=est.mode, estimate=est)


def _violations(est: Estimate, slo: SLO) -> list[str]:
    out = []
    if est.served_ttft_ms > slo.ttft_ms:
        out.append(f"TTFT {est.served_ttft_ms:.1f} ms > {slo.ttft_ms:g} ms")
    if est.served_tpot_ms > slo.tpot_ms:
        out.append(f"TPOT {est.served_tpot_ms:.2f} ms > {slo.tpot_ms:g} ms")
    return out


def _evaluate(cfg, gpu: GPU, count: int, mig: str | None, workload: Workload, slo: SLO, factors: Factors,
              spec, params) -> Option:
    est = estimate(cfg, gpu, workload, count=count, mig=mig, factors=factors, spec=spec, params=params)
    if not est.fits:
        return _option(est, 1, f"does not fit: needs {gib(est.memory_per_gpu_bytes, 1)} per GPU, "
                               f"{gpu.label if mig is None else gpu.slice(mig).label} has {gib(est.gpu_memory_bytes, 1)}",
                       False)
    bad = _violations(est, slo)
    # Meet a throughput target with a bigger batch while TTFT/TPOT and memory allow, then replicas.
    target = slo.throughput_tokens_per_s
    if not bad and target and est.throughput_tokens_per_s < target:
        batch = workload.batch
        while est.throughput_tokens_per_s < target and batch * 2 <= est.max_batch:
            trial = estimate(cfg, gpu, workload.with_(batch=batch * 2), count=count, mig=mig, factors=factors,
                             spec=spec, params=params)
            if not trial.fits or _violations(trial, slo):
                break
            est, batch = trial, batch * 2
    replicas = 1
    if target and est.throughput_tokens_per_s < target:
        replicas = math.ceil(target / est.throughput_tokens_per_s)
        if replicas > MAX_REPLICAS:
            bad.append(f"throughput {est.throughput_tokens_per_s:.0f} tok/s per replica needs "
                       f"{replicas} replicas (> {MAX_REPLICAS})")
            replicas = 1
    price = est.price_per_hour * replicas
    if slo.budget_per_hour is not None and price > slo.budget_per_hour:
        bad.append(f"${price:.2f}/h > budget ${slo.budget_per_hour:g}/h")
    return _option(est, replicas, "; ".join(bad), not bad)


def _with_traffic(o: Option, slo: SLO, traffic: Traffic, least: int) -> Option:
    """``o`` held to the p95 targets under ``traffic``: the replicas that hold the rate (at
    least the closed loop's), or the reason it cannot."""
    est = o.estimate
    held = held_rate(est, slo.ttft_ms, slo.tpot_ms, traffic.lengths, start=traffic.request_rate / least,
                     iterations=HELD_RATE_ITERATIONS)
    if held <= 0:
        reason = (f"misses p95 TTFT {slo.ttft_ms:g} ms / TPOT {slo.tpot_ms:g} ms at any rate with requests "
                  "arriving at random")
        out = _option(est, o.replicas, reason, False)
    else:
        replicas = max(o.replicas, math.ceil(traffic.request_rate / held))
        bad = []
        if replicas > MAX_REPLICAS:
            bad.append(f"{traffic.request_rate:g} requests/s at {held:.3g} per replica within the p95 targets "
                       f"needs {replicas} replicas (> {MAX_REPLICAS})")
            replicas = o.replicas
        if slo.budget_per_hour is not None and est.price_per_hour * replicas > slo.budget_per_hour:
            bad.append(f"${est.price_per_hour * replicas:.2f}/h > budget ${slo.budget_per_hour:g}/h")
        out = _option(est, replicas, "; ".join(bad), not bad)
    out.held_rate_per_replica = held
    return out


def _least_replicas(o: Option, traffic: Traffic) -> int:
    """A lower bound on the replicas ``o`` needs for ``traffic`` without simulating: the closed
    loop's, the front end's cap (one request per ``front_end_ms``) and the most output tokens/s
    one replica serves."""
    est = o.estimate
    rate = traffic.request_rate
    out_tokens = traffic.lengths.mean(1) if traffic.lengths is not None else est.output_tokens
    m = est.step_model
    front = request_costs_ms(m.factors, m.gpu)[0] if m is not None else 0.0
    by_front = math.floor(rate * front / 1e3) + 1 if front > 0 else 1
    by_tokens = math.ceil(rate * out_tokens / est.max_throughput_tokens_per_s) if est.max_throughput_tokens_per_s else 1
    return max(o.replicas, by_front, by_tokens)


def _check_traffic(options: list[Option], slo: SLO, traffic: Traffic) -> list[Option]:
    """The feasible options held to ``traffic``, in the order of a lower bound on their price
    (``_least_replicas``), until the next one's bound cannot beat the best found; an option not
    reached is not checked, and says so (at its least replicas it costs no less than the best)."""
    least = {id(o): _least_replicas(o, traffic) for o in options
             if o.feasible and o.estimate is not None and o.estimate.step_model is not None}
    bound = {id(o): o.estimate.price_per_hour * n for o in options if (n := least.get(id(o)))}
    feasible = sorted((o for o in options if id(o) in bound), key=lambda o: (bound[id(o)], *_rank_key(o)[1:]))
    checked: dict[int, Option] = {}
    best = math.inf
    for o in feasible:
        n = least[id(o)]
        if bound[id(o)] >= best:
            checked[id(o)] = _option(o.estimate, n, f"not held to {traffic.request_rate:g} requests/s: at "
                                     f"{n}+ replicas (${bound[id(o)]:.2f}/h) no cheaper than ${best:.2f}/h", False)
            continue
        checked[id(o)] = t = _with_traffic(o, slo, traffic, n)
        if t.feasible:
            best = min(best, t.price_per_hour)
    return [checked.get(id(o), o) for o in options]


def _unsupported(gpu: GPU, precision: str, mig: str | None, count: int, reason: str, workload) -> Option:
    return Option(gpu=gpu.name, count=count, mig=mig, precision=precision, batch=workload.batch, replicas=1,
                  fits=False, meets_slo=False, ttft_ms=math.inf, tpot_ms=math.inf, throughput_tokens_per_s=0.0,
                  price_per_hour=gpu.price_per_hour * count, cost_per_1m_output_tokens=math.inf, memory_bytes=0,
                  reason=reason, mode="n/a")


def precision_for(gpu: GPU, name: str) -> tuple[str, str]:
    """(precision to use on this device, reason it cannot be used or ''): bf16 becomes fp16
    on a GPU without bf16; a precision whose kernels the device lacks is refused."""
    prec = get_precision(name)
    if prec.name == "bf16" and not gpu.supports("bf16"):
        return "fp16", ""  # Turing: same size and speed class in fp16
    if prec.feature and not gpu.supports(prec.feature):
        need = f"compute capability >= {prec.min_compute_capability}"
        return prec.name, f"{gpu.name} lacks {prec.feature} ({need}) for {prec.name}"
    return prec.name, ""


def _rank_key(o: Option):
    if o.feasible:
        return (0, o.price_per_hour, o.cost_per_1m_output_tokens, o.tpot_ms)
    return (1 if o.fits else 2, o.price_per_hour, o.tpot_ms)


def recommend(config: Any, workload: Workload, slo: SLO, catalog: Catalog | None = None,
              precisions: Iterable[str] | None = None, *, factors: Factors | None = None,
              gpus: Iterable[str] | None = None, include_mig: bool = True,
              include_cpu: bool = False, traffic: Traffic | None = None) -> Recommendation:
    """Rank all options and return the cheapest feasible one.

    ``traffic``: hold the p95 targets at that request rate with requests arriving at random
    (replicas added until one holds its share), not only at the workload's batch.

    Only devices the catalog's price list prices are options (naming an unpriced one in
    ``gpus`` is a ``ConfigError``); ``include_cpu`` adds the catalog's CPU instance types.
    ``precisions``: weight precisions to try (default ``rightsizer.precisions.SEARCH_ORDER``).
    Raises ``NoFeasibleOption`` (``InsufficientMemory`` when nothing even fits) with an actionable
    message; the exception carries the ranked ``options``.
    """
    if not isinstance(workload, Workload):
        raise ConfigError(f"workload must be a Workload, got {type(workload).__name__}")
    if not isinstance(slo, SLO):
        raise ConfigError(f"slo must be an SLO, got {type(slo).__name__}")
    catalog = catalog or default_catalog()
    factors = factors or Factors.defaults(catalog)
    spec = model_spec(config)
    params = count_spec(spec)
    # by default the precisions the quantize search can make: whatever is chosen, the pipeline can build
    names = list(precisions) if precisions else list(SEARCH_ORDER)
    for n in names:
        get_precision(n)  # fail early on a typo
    if gpus:
        selected = [catalog.get(g) for g in gpus]
        unpriced = [g.name for g in selected if not g.priced]
        if unpriced:
            raise ConfigError(f"{', '.join(unpriced)} has no price in price list {catalog.price_list_name or '(none)'}"
                              f"; give one (--price {unpriced[0]}=USD, load_catalog(extra=...)) or use another list")
    else:
        selected = catalog.priced(include_cpu=include_cpu)

    options: list[Option] = []
    for gpu in selected:
        for name in names:
            prec, why = precision_for(gpu, name)
            if why:
                options.append(_unsupported(gpu, prec, None, 1, why, workload))
                continue
            wl = workload.with_(precision=prec)
            for count in TP_COUNTS:
                if tp_problem(spec, gpu, count):
                    continue
                opt = _evaluate(config, gpu, count, None, wl, slo, factors, spec, params)
                options.append(opt)
                if opt.feasible:
                    break  # more GPUs of this kind only cost more
            if include_mig:
                for prof in gpu.mig_profiles:
                    if prof.compute_fraction >= 1.0:
                        continue  # the full-GPU profile is the GPU itself
                    options.append(_evaluate(config, gpu, 1, prof.name, wl, slo, factors, spec, params))
    unique = unique_deployments(options)  # bf16 -> fp16 on Turing repeats a precision
    if traffic is not None:
        unique = _check_traffic(unique, slo, traffic)
    unique.sort(key=_rank_key)
    feasible = [o for o in unique if o.feasible]
    if not feasible:
        exc = _no_option(spec.name, unique, slo, names)
        hint = _lower_precision_hint(config, workload, selected, names, factors, spec, params)
        if hint:
            exc.args = (f"{exc.args[0]}; {hint}",)
        raise exc
    return Recommendation(chosen=feasible[0], options=unique, model=spec.name, workload=workload, slo=slo,
                          price_list=catalog.price_list.summary() if catalog.price_list else {},
                          model_config=None if isinstance(config, ModelSpec) else load_config(config))


def _lower_precision_hint(cfg, workload: Workload, gpus: list[GPU], tried: list[str], factors: Factors,
                          spec, params) -> str:
    """'or int4 on 1x A100-80GB' when a precision not tried would fit on fewer GPUs."""
    tried_names = {get_precision(t).name for t in tried}
    for name in ("int4", "nf4"):
        if name in tried_names:
            continue
        best = None
        for gpu in sorted(gpus, key=lambda g: g.price_per_hour):
            prec, why = precision_for(gpu, name)
            if why:
                continue
            est = estimate(cfg, gpu, workload.with_(precision=prec), factors=factors, spec=spec, params=params)
            if est.fits:
                best = gpu
                break
        if best is not None:
            return f"or quantize: {name} fits on 1x {best.name} (add it with precisions=[..., '{name}'])"
    return ""


def _no_option(model: str, options: list[Option], slo: SLO, precisions: list[str]) -> NoFeasibleOption:
    fitting = [o for o in options if o.fits]
    if not fitting:
        biggest = max((o for o in options if o.estimate is not None), key=lambda o: o.estimate.gpu_memory_bytes
                      * o.count, default=None)
        hint = ""
        if biggest is not None:
            hint = (f" The largest option tried, {biggest.label}, needs {gib(biggest.estimate.memory_per_gpu_bytes, 1)}"
                    f" per GPU of {gib(biggest.estimate.gpu_memory_bytes, 1)}.")
        exc: NoFeasibleOption = InsufficientMemory(
            f"{model} does not fit on any option in the catalog at {', '.join(precisions)} within 8 GPUs per node."
            f"{hint} Try a lower precision (int4, nf4), a shorter context or smaller batch, or add a larger GPU "
            "to the catalog.")
        exc.options = options  # type: ignore[attr-defined]
        return exc
    hints = []
    by_prec: dict[str, Option] = {}
    for o in sorted(fitting, key=lambda o: o.price_per_hour):
        by_prec.setdefault(o.precision, o)
    fits_text = ", ".join(f"{o.label}" for o in by_prec.values())
    hints.append(f"the cheapest that fit in memory: {fits_text}")

    def worst_ratio(o: Option) -> float:
        r = max(o.ttft_ms / slo.ttft_ms, o.tpot_ms / slo.tpot_ms)
        if slo.budget_per_hour:
            r = max(r, o.price_per_hour / slo.budget_per_hour)
        return r

    close = sorted(fitting, key=worst_ratio)[:3]
    hints.append("closest: " + "; ".join(f"{o.label} ({o.reason or 'no reason'})" for o in close))
    best = close[0]
    needed = []
    if best.ttft_ms > slo.ttft_ms:
        needed.append(f"TTFT target >= {math.ceil(best.ttft_ms)} ms")
    if best.tpot_ms > slo.tpot_ms:
        needed.append(f"TPOT target >= {best.tpot_ms:.1f} ms")
    if slo.budget_per_hour is not None and best.price_per_hour > slo.budget_per_hour:
        needed.append(f"budget >= ${best.price_per_hour:.2f}/h")
    action = f"; relax to {' and '.join(needed)} for {best.label}" if needed else ""
    exc = NoFeasibleOption(f"no option meets {slo.describe()} for {model}: " + "; ".join(hints) + action)
    exc.options = options  # type: ignore[attr-defined]
    return exc
