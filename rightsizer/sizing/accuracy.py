"""Hold the estimator against published serving measurements, and fit its factors to them.

The measurements are data (``benchmarks/data/sizing_accuracy.yaml``, one source per row); this
module predicts each row the way the metric was measured:

- ``ttft_ms``: one request alone (batch 1): the prefill step;
- ``tpot_ms``: one request alone: the decode step at the last output token;
- ``max_throughput_tokens_per_s``: saturated serving under continuous batching, the best batch
  the KV cache holds (:mod:`rightsizer.sizing.batching`).

A source may say how its engine ran (``engine_settings``: KV blocks reserved for the whole
request, CUDA graphs off); those Factors fields are applied to its rows only (``Row.engine``).

``fit_factors`` fits the few efficiency factors that are global (not per GPU) on the rows
marked ``fit`` only; the rest are held out and reported apart.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from rightsizer.errors import ConfigError
from rightsizer.sizing.calibration import Factors
from rightsizer.sizing.catalog import Catalog, default_catalog
from rightsizer.sizing.estimate import Workload, estimate
from rightsizer.sizing.params import ModelSpec, count_spec, model_spec

METRICS = ("ttft_ms", "tpot_ms", "max_throughput_tokens_per_s")
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
    for name, src in ((data or {}).get("sources") or {}).items():
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
                            engine=engines.get(r["source"], ())))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"rows[{i}] ({r.get('id', '?') if isinstance(r, dict) else r!r}): {exc}")
            continue
        if rows[-1].metric not in METRICS:
            problems.append(f"rows[{i}] ({r['id']}): metric {r['metric']!r}, expected one of {', '.join(METRICS)}")
    if problems:
        raise ConfigError(problems, source=os.fspath(path))
    return rows


def predict(row: Row, factors: Factors, catalog: Catalog | None = None,
            specs: dict[str, ModelSpec] | None = None) -> float:
    """The estimator's figure for one row, measured the row's way (with its source's engine settings)."""
    if row.engine:
        factors = replace(factors, **dict(row.engine))
    specs = specs if specs is not None else {}
    spec = specs.get(row.model)
    if spec is None:
        spec = specs[row.model] = model_spec(str(config_path(row.model)))
    catalog = catalog or default_catalog()
    out = 1 if row.metric == "ttft_ms" else row.output_tokens  # TTFT rows: prefill only
    wl = Workload(row.prompt_tokens, max(1, out), 1, row.precision, row.kv_precision)
    est = estimate(spec, catalog.get(row.gpu), wl, count=row.count, factors=factors, catalog=catalog,
                   spec=spec, params=count_spec(spec))
    if row.metric == "ttft_ms":
        return est.ttft_ms
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


def summary(results: list[Result]) -> dict[str, dict[str, Any]]:
    """Mean absolute error and bias per metric and split."""
    out: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        for split in ("fit", "held_out"):
            sel = [r for r in results if r.row.metric == metric and r.row.split == split]
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


__all__ = ["METRICS", "FITTED", "ENGINE_SETTINGS", "Row", "Result", "load_rows", "predict", "evaluate", "mean_abs_error",
           "summary", "fit_factors", "with_fitted", "config_path"]
