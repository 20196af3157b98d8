"""Hold the estimator against published serving measurements, and fit its factors to them.

The measurements are data (``benchmarks/data/sizing_accuracy.yaml``, one source per row); this
module predicts each row the way the metric was measured:

- ``ttft_ms``: one request alone (batch 1): the prefill step;
- ``tpot_ms``: one request alone: the decode step at the last output token;
- ``max_throughput_tokens_per_s``: saturated serving under continuous batching, the best batch
  the KV cache holds (:mod:`rightsizer.sizing.batching`);
- a row measured at a ``request_rate`` (requests/s, Poisson; ``inf``: ``num_prompts`` sent at
  once) is run through the scheduler simulation (:mod:`rightsizer.sizing.traffic`) the way the
  benchmark ran it, and its ``stat`` (mean, median, p99) read from the simulated requests;
  ``lengths: uniform`` rows give the mean of a random-length dataset (``length_range``: the
  range each length was drawn from, both sides, where the source gives it);
- a row at ``concurrency`` above 1 is the closed loop at that many requests in flight;
- a source measured through a server (``through_server``: a client timing HTTP requests) adds
  the server's per-request cost to TTFT.

A source may say how its engine ran (``engine_settings``: KV blocks reserved for the whole
request, CUDA graphs off); those Factors fields are applied to its rows only (``Row.engine``).

``fit_factors`` fits the few efficiency factors that are global (not per GPU) on the rows
marked ``fit`` only; the rest are held out and reported apart.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from rightsizer.errors import ConfigError
from rightsizer.sizing.calibration import HOST_COSTS, NO_HOST, Factors
from rightsizer.sizing.catalog import Catalog, default_catalog
from rightsizer.sizing.estimate import Workload, estimate, tail
from rightsizer.sizing.traffic import Lengths
from rightsizer.sizing.params import ModelSpec, count_spec, model_spec

METRICS = ("ttft_ms", "tpot_ms", "max_throughput_tokens_per_s")
STATS = ("mean", "median", "p99")
SMALL_PARAMS = 3.5e9  # "small model" rows (the 3 B class and under: Llama-3.2-3B is 3.21 B), reported apart
ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA = ROOT / "benchmarks" / "data" / "sizing_accuracy.yaml"
CONFIG_DIRS = (ROOT / "tasks" / "examples" / "configs", ROOT / "benchmarks" / "data" / "configs",
               ROOT / "tests" / "fixtures" / "configs")

# The factors fit_factors may change, with the bounds it keeps them in.
FITTED = {
    "compute_efficiency": (0.3, 1.0),
    "memory_efficiency": (0.4, 1.0),
    "step_overhead_ms": (0.0, 5.0),
    "kernel_overhead_us": (0.0, 10.0),
    "prefill_kernel_overhead_us": (0.0, 20.0),
    "gemm_half_tokens": (0.0, 512.0),
    "attention_compute_efficiency": (0.2, 1.0),
    "fp8_compute_scale": (0.3, 1.0),
    "link_efficiency": (0.2, 1.0),
    "moe_efficiency": (0.2, 1.0),
    "moe_memory_efficiency": (0.5, 1.3),
    "moe_fp8_compute_scale": (0.2, 1.0),
    "host_step_ms": (0.0, 8.0),
    "host_seq_us": (0.0, 60.0),
    "host_overlap": (0.0, 1.0),
    "front_end_ms": (0.0, 40.0),
    "server_latency_ms": (0.0, 60.0),
}


@dataclass(frozen=True)
class Row:
    """One published measurement."""

    id: str
    source: str
    model: str
    gpu: str
    count: int
    precision: str
    kv_precision: str | None
    prompt_tokens: int
    output_tokens: int
    metric: str
    value: float
    split: str
    # how the source's engine ran (its ``engine_settings``): Factors fields that describe the
    # engine rather than the hardware, e.g. (("decode_cuda_graphs", False), ("kv_output_share", 1.0))
    engine: tuple[tuple[str, Any], ...] = ()
    request_rate: float | None = None  # open loop, requests/s (inf: every request at once)
    num_prompts: int = 500  # requests in an open-loop run
    stat: str = "mean"  # mean, median, p99 (open-loop rows)
    concurrency: int = 1  # closed loop: requests in flight
    uniform_lengths: bool = False  # prompt and output tokens are the means of uniform random lengths
    length_range: tuple[int, int] | None = None  # uniform lengths' range (both sides), else [1, 2 x mean - 1]
    through_server: bool = False  # the source timed HTTP requests (its TTFT includes the server's cost)
    host: str | None = None  # the serving engine whose host costs apply (Factors.engine_host_costs)

    @property
    def params(self) -> int:
        return _params(self.model)


# Factors a source's engine_settings may set: how its engine schedules and launches, not efficiency.
ENGINE_SETTINGS = ("kv_output_share", "decode_cuda_graphs", "token_budget")


@dataclass(frozen=True)
class Result:
    row: Row
    predicted: float

    @property
    def error(self) -> float:
        """Relative error of the prediction (+0.1: 10 % high)."""
        return self.predicted / self.row.value - 1


@functools.lru_cache(maxsize=None)
def _params(model: str) -> int:
    return count_spec(model_spec(str(config_path(model)))).total


def config_path(name: str) -> Path:
    for d in CONFIG_DIRS:
        p = d / f"{name}.json"
        if p.exists():
            return p
    raise ConfigError(f"model {name!r}: no {name}.json in {', '.join(os.fspath(d) for d in CONFIG_DIRS)}")


def load_rows(path: str | os.PathLike = DEFAULT_DATA) -> list[Row]:
    """The rows of a measurements file; ConfigError naming the file and row for a bad one."""
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    rows, problems = [], []
    engines: dict[str, tuple[tuple[str, Any], ...]] = {}
    served: dict[str, bool] = {}
    hosts: dict[str, str | None] = {}
    for name, src in ((data or {}).get("sources") or {}).items():
        served[name] = bool((src or {}).get("through_server", False))
        hosts[name] = (src or {}).get("host")
        settings = dict((src or {}).get("engine_settings") or {})
        unknown = sorted(set(settings) - set(ENGINE_SETTINGS))
        if unknown:
            problems.append(f"sources.{name}.engine_settings: unknown {', '.join(unknown)}; "
                            f"known: {', '.join(ENGINE_SETTINGS)}")
        engines[name] = tuple(sorted((k, v) for k, v in settings.items() if k in ENGINE_SETTINGS))
    for i, r in enumerate((data or {}).get("rows") or []):
        try:
            rows.append(Row(id=r["id"], source=r["source"], model=r["model"], gpu=r["gpu"], count=int(r["count"]),
                            precision=r["precision"], kv_precision=r.get("kv_precision"),
                            prompt_tokens=int(r["prompt_tokens"]), output_tokens=int(r["output_tokens"]),
                            metric=r["metric"], value=float(r["value"]), split=r["split"],
                            engine=engines.get(r["source"], ()),
                            request_rate=None if r.get("request_rate") is None else float(r["request_rate"]),
                            num_prompts=int(r.get("num_prompts", 500)), stat=str(r.get("stat", "mean")),
                            concurrency=int(r.get("concurrency", 1)),
                            uniform_lengths=r.get("lengths", "fixed") == "uniform",
                            length_range=tuple(int(v) for v in r["length_range"]) if r.get("length_range") else None,
                            through_server=served.get(r["source"], False), host=hosts.get(r["source"])))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"rows[{i}] ({r.get('id', '?') if isinstance(r, dict) else r!r}): {exc}")
            continue
        if rows[-1].metric not in METRICS:
            problems.append(f"rows[{i}] ({r['id']}): metric {r['metric']!r}, expected one of {', '.join(METRICS)}")
        if rows[-1].stat not in STATS:
            problems.append(f"rows[{i}] ({r['id']}): stat {r.get('stat')!r}, expected one of {', '.join(STATS)}")
        if r.get("lengths", "fixed") not in ("fixed", "uniform"):
            problems.append(f"rows[{i}] ({r['id']}): lengths {r.get('lengths')!r}, expected fixed or uniform")
        lr = rows[-1].length_range
        if lr is not None and (len(lr) != 2 or not 1 <= lr[0] <= lr[1] or not rows[-1].uniform_lengths):
            problems.append(f"rows[{i}] ({r['id']}): length_range {r.get('length_range')!r}, expected [low, high] "
                            "with 1 <= low <= high, on a row with lengths: uniform")
    if problems:
        raise ConfigError(problems, source=os.fspath(path))
    return rows


def predict(row: Row, factors: Factors, catalog: Catalog | None = None,
            specs: dict[str, ModelSpec] | None = None) -> float:
    """The estimator's figure for one row, measured the row's way (with its source's engine settings)."""
    if row.engine:
        factors = replace(factors, **dict(row.engine))
    # host costs belong to an engine: rows of a source that names none (TensorRT-LLM's offline
    # benchmark, NIM, gpt-fast) are predicted without them
    factors = factors.for_engine(row.host or NO_HOST)
    specs = specs if specs is not None else {}
    spec = specs.get(row.model)
    if spec is None:
        spec = specs[row.model] = model_spec(str(config_path(row.model)))
    catalog = catalog or default_catalog()
    server_ms = factors.front_end_ms + factors.server_latency_ms if row.through_server else 0.0
    if row.request_rate is not None:  # open loop: the benchmark's run, through the scheduler
        est = estimate(spec, catalog.get(row.gpu), Workload(row.prompt_tokens, row.output_tokens, 1, row.precision,
                                                            row.kv_precision),
                       count=row.count, factors=factors if row.through_server else replace(factors, front_end_ms=0.0,
                                                                                           server_latency_ms=0.0),
                       catalog=catalog, spec=spec, params=count_spec(spec))
        if row.length_range is not None:
            lengths = Lengths.uniform_between(row.length_range, row.length_range)
        elif row.uniform_lengths:
            lengths = Lengths.uniform(row.prompt_tokens, row.output_tokens)
        else:
            lengths = Lengths.fixed(row.prompt_tokens, row.output_tokens)
        fig = tail(est, row.request_rate, lengths, exact_requests=row.num_prompts)
        if row.metric == "max_throughput_tokens_per_s":
            return fig.output_tokens_per_s
        kind = "ttft" if row.metric == "ttft_ms" else "tpot"
        return getattr(fig, f"{kind}_{ {'median': 'p50'}.get(row.stat, row.stat)}_ms")
    if row.concurrency > 1:  # closed loop at that many in flight
        est = estimate(spec, catalog.get(row.gpu), Workload(row.prompt_tokens, row.output_tokens, row.concurrency,
                                                            row.precision, row.kv_precision),
                       count=row.count, factors=factors, catalog=catalog, spec=spec, params=count_spec(spec))
        if row.metric == "ttft_ms":
            return est.served_ttft_ms if row.through_server else est.served_ttft_ms - est.server_ms
        if row.metric == "tpot_ms":
            return est.tpot_at_load_ms
        return est.max_throughput_tokens_per_s
    out = 1 if row.metric == "ttft_ms" else row.output_tokens  # TTFT rows: prefill only
    wl = Workload(row.prompt_tokens, max(1, out), 1, row.precision, row.kv_precision)
    est = estimate(spec, catalog.get(row.gpu), wl, count=row.count, factors=factors, catalog=catalog,
                   spec=spec, params=count_spec(spec))
    if row.metric == "ttft_ms":
        return est.ttft_ms + server_ms
    if row.metric == "tpot_ms":
        return est.tpot_ms
    return est.max_throughput_tokens_per_s


def evaluate(rows: Iterable[Row], factors: Factors | None = None, catalog: Catalog | None = None) -> list[Result]:
    factors = factors or Factors.defaults(catalog)
    specs: dict[str, ModelSpec] = {}
    return [Result(r, predict(r, factors, catalog, specs)) for r in rows]


def mean_abs_error(results: Iterable[Result]) -> float:
    errs = [abs(r.error) for r in results]
    return sum(errs) / len(errs) if errs else math.nan


def summary(results: list[Result], size: str = "all") -> dict[str, dict[str, Any]]:
    """Mean absolute error and bias per metric and split; ``size`` "small" (under 3 B
    parameters), "big" or "all" rows."""
    out: dict[str, dict[str, Any]] = {}
    keep = {"all": lambda r: True, "small": lambda r: r.row.params < SMALL_PARAMS,
            "big": lambda r: r.row.params >= SMALL_PARAMS}[size]
    for metric in METRICS:
        for split in ("fit", "held_out"):
            sel = [r for r in results if r.row.metric == metric and r.row.split == split and keep(r)]
            if sel:
                out.setdefault(metric, {})[split] = {
                    "rows": len(sel), "mae": mean_abs_error(sel),
                    "bias": sum(r.error for r in sel) / len(sel),
                    "worst": max(sel, key=lambda r: abs(r.error)).row.id}
    return out


def with_fitted(base: Factors, values: Mapping[str, float]) -> Factors:
    """``base`` with the fitted factors (``fp8_compute_scale`` goes into dtype_compute_scale)."""
    changes = {k: v for k, v in values.items() if k not in ("fp8_compute_scale", "moe_fp8_compute_scale")}
    if "fp8_compute_scale" in values:
        changes["dtype_compute_scale"] = {**dict(base.dtype_compute_scale), "fp8": values["fp8_compute_scale"]}
    if "moe_fp8_compute_scale" in values:
        changes["moe_compute_scale"] = {**dict(base.moe_compute_scale), "fp8": values["moe_fp8_compute_scale"]}
    return replace(base, **changes)


def fit_factors(rows: Iterable[Row], base: Factors | None = None, catalog: Catalog | None = None,
                names: Iterable[str] = tuple(FITTED)) -> tuple[dict[str, float], float]:
    """The global factors that minimise the mean absolute log error over ``rows`` whose split is
    ``fit`` (each metric weighted equally), and that error. scipy's bounded Powell search."""
    from scipy.optimize import minimize

    base = base or Factors.defaults(catalog)
    fit_rows = [r for r in rows if r.split == "fit"]
    if not fit_rows:
        raise ConfigError("no rows with split: fit to fit the factors on")
    names = list(names)
    unknown = sorted(set(names) - set(FITTED))
    if unknown:
        raise ConfigError(f"cannot fit {', '.join(unknown)}; fittable: {', '.join(FITTED)}")
    specs: dict[str, ModelSpec] = {}
    by_metric = {m: [r for r in fit_rows if r.metric == m] for m in METRICS}

    def current(name: str) -> float:
        if name == "fp8_compute_scale":
            return float(base.dtype_compute_scale.get("fp8", 1.0))
        if name == "moe_fp8_compute_scale":
            return float(base.moe_compute_scale.get("fp8", 1.0))
        v = getattr(base, name)
        if v is None:
            fallback = {"prefill_kernel_overhead_us": base.kernel_overhead_us,
                        "moe_memory_efficiency": base.moe_efficiency}
            return float(fallback.get(name, base.compute_efficiency))
        return float(v)

    x0 = [min(max(current(n), FITTED[n][0]), FITTED[n][1]) for n in names]

    def loss(x) -> float:
        f = with_fitted(base, dict(zip(names, x)))
        total = 0.0
        for sel in by_metric.values():
            if sel:
                total += sum(abs(math.log(predict(r, f, catalog, specs) / r.value)) for r in sel) / len(sel)
        return total

    res = minimize(loss, x0, method="Powell", bounds=[FITTED[n] for n in names],
                   options={"xtol": 1e-3, "ftol": 1e-4, "maxfev": 4000})
    return {n: round(float(v), 4) for n, v in zip(names, res.x)}, float(res.fun)


def fit_host_costs(rows: Iterable[Row], base: Factors | None = None, catalog: Catalog | None = None
                   ) -> dict[str, tuple[dict[str, float], float]]:
    """Per serving engine (a source's ``host``), the host costs (``HOST_COSTS``) that minimise
    the mean absolute log error over that engine's ``fit`` rows, the other factors as given:
    {engine: (values, error)}. Engines without fit rows are left out (the default applies)."""
    base = base or Factors.defaults(catalog)
    rows = list(rows)
    out = {}
    for host in sorted({r.host for r in rows if r.host and r.split == "fit"}):
        mine = [r for r in rows if r.host == host]
        start = replace(base, engine_host_costs={})  # fit from the default engine's values
        out[host] = fit_factors(mine, start, catalog, names=HOST_COSTS)
    return out


__all__ = ["fit_host_costs", "SMALL_PARAMS", "STATS", "METRICS", "FITTED", "ENGINE_SETTINGS", "Row", "Result", "load_rows", "predict", "evaluate", "mean_abs_error",
           "summary", "fit_factors", "with_fitted", "config_path"]
