"""Efficiency factors: defaults from the catalog, pure roofline, or calibrated from measurements.

Latency of an operation = max(FLOPs / (peak x compute_efficiency),
bytes / (bandwidth x memory_efficiency)) and each forward step adds ``step_overhead_ms``.
``fit_calibration`` fits those three numbers per GPU (or ``"cpu-local"``) from measured
latencies; ``Factors.save`` / ``Factors.load`` write and read them as sorted JSON.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Mapping

from rightsizer.errors import ConfigError
from rightsizer.sizing.operator_data import gemm_table
from rightsizer.sizing.roofline import OpEfficiency

MODES = ("roofline", "default-factors", "operator-data", "calibrated")
NO_HOST = "none"  # Factors.for_engine: no host costs
HOST_COSTS = ("host_step_ms", "host_seq_us", "host_overlap", "front_end_ms", "server_latency_ms")  # the host's share, fitted per serving engine


@dataclass(frozen=True)
class GpuFactors:
    """Fitted factors for one device."""

    compute_efficiency: float
    memory_efficiency: float
    step_overhead_ms: float
    samples: int = 0
    rms_relative_error: float = 0.0
    prefill_floor_ms: float = 0.0  # host-bound floor of a prefill step (eager frameworks launch-bound)
    decode_floor_ms: float = 0.0  # host-bound floor of a decode step
    # host cost per decoder layer (eager frameworks dispatch each layer's ops one by one), fitted
    # where the measurements name their models' layer counts
    prefill_layer_ms: float = 0.0
    decode_layer_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"compute_efficiency": self.compute_efficiency, "memory_efficiency": self.memory_efficiency,
                "step_overhead_ms": self.step_overhead_ms, "samples": self.samples,
                "rms_relative_error": self.rms_relative_error, "prefill_floor_ms": self.prefill_floor_ms,
                "decode_floor_ms": self.decode_floor_ms, "prefill_layer_ms": self.prefill_layer_ms,
                "decode_layer_ms": self.decode_layer_ms}


def _published(name: str) -> Any:
    """A field whose default is the packaged catalog's value (``efficiency.<name>`` in
    rightsizer/data/gpus.yaml, the one place the published factors and their sources are
    written), read when a ``Factors`` is made without it."""

    def value() -> Any:
        from rightsizer.sizing.catalog import default_catalog

        v = default_catalog().efficiency[name]["value"]
        return dict(v) if isinstance(v, Mapping) else v

    return field(default_factory=value)


@dataclass(frozen=True)
class Factors:
    """Efficiency factors an estimate uses, and the mode that produced them.

    mode: "roofline" (100% of peak, no overhead), "default-factors" (published measurements,
    see rightsizer/data/gpus.yaml), or "calibrated" (``per_gpu`` fitted on real hardware; GPUs
    without a fit fall back to the defaults and their estimates say "default-factors").
    A field not given is the packaged catalog's value (``Factors()`` is ``Factors.defaults()``
    without the sources).
    """

    compute_efficiency: float = _published("compute_efficiency")
    memory_efficiency: float = _published("memory_efficiency")
    step_overhead_ms: float = _published("step_overhead_ms")
    quant_memory_efficiency: Mapping[str, float] = _published("quant_memory_efficiency")
    reserve_bytes: int = _published("reserve_bytes")
    reserve_fraction: float = _published("reserve_fraction")
    allreduce_latency_us: float = _published("allreduce_latency_us")
    link_efficiency: float = _published("link_efficiency")
    # CPU instance types (catalog ``cpus``): eager PyTorch, far from the datasheet peaks
    cpu_compute_efficiency: float = _published("cpu_compute_efficiency")
    cpu_memory_efficiency: float = _published("cpu_memory_efficiency")
    cpu_step_overhead_ms: float = _published("cpu_step_overhead_ms")
    # What runs, not just the roofs (GPU only; see roofline.OpEfficiency)
    dtype_compute_scale: Mapping[str, float] = _published("dtype_compute_scale")  # compute dtype -> x compute_eff
    gemm_half_tokens: float = _published("gemm_half_tokens")  # GEMM M at which compute efficiency is half its large-M value
    attention_compute_efficiency: float | None = None  # prefill attention kernel, share of peak (None: as GEMMs)
    kernel_overhead_us: float = _published("kernel_overhead_us")  # fixed cost per kernel launch (small memory-bound ops), decode steps
    prefill_kernel_overhead_us: float | None = _published("prefill_kernel_overhead_us")  # the same in steps that prefill (eager); None: as decode
    moe_efficiency: float = _published("moe_efficiency")  # expert GEMMs of MoE layers, share of the dense GEMMs' compute efficiency
    moe_memory_efficiency: float | None = _published("moe_memory_efficiency")  # ... of their memory efficiency (None: moe_efficiency)
    moe_compute_scale: Mapping[str, float] = _published("moe_compute_scale")  # compute dtype -> x moe_efficiency
    token_budget: int = _published("token_budget")  # tokens per step of the continuous batch (chunked prefill budget)
    # How the serving engine runs (not the hardware): the share of a running sequence's output tokens
    # whose KV cache it holds on average (0.5: blocks allocated as tokens arrive, vLLM / SGLang; 1.0:
    # each request's whole prompt + output reserved at admission, TensorRT-LLM's GUARANTEED_NO_EVICT),
    # and whether decode-only steps replay a CUDA graph (False: every step launches its kernels one
    # by one at prefill_kernel_overhead_us, e.g. TensorRT-LLM's TensorRT backend, vLLM --enforce-eager).
    kv_output_share: float = _published("kv_output_share")
    decode_cuda_graphs: bool = _published("decode_cuda_graphs")
    # The host's share, which decides small models' figures (GPU work no longer hides it): the
    # engine's host time per step (scheduler, sampler, detokeniser: fixed, and per running
    # sequence), overlapped with the GPU's (a step takes the longer); the server's front end's
    # time per request (HTTP, tokenising), one request at a time, so it also caps the request
    # rate; and latency per request that does not hold the front end (streaming, the client's
    # round trip), added to TTFT only.
    host_step_ms: float = _published("host_step_ms")
    host_seq_us: float = _published("host_seq_us")
    # the share of that host time hidden under the GPU's (1: a step takes the longer of the two,
    # an engine that schedules the next step while the GPU runs; 0: they add up, one after the other)
    host_overlap: float = _published("host_overlap")
    front_end_ms: float = _published("front_end_ms")  # serial: the front end is busy
    server_latency_ms: float = _published("server_latency_ms")  # not serial: added to TTFT only
    # the same five, fitted per serving engine (its name: {host_step_ms, host_seq_us, host_overlap,
    # front_end_ms, server_latency_ms}); the five above are the packaged defaults (``for_engine``)
    engine_host_costs: Mapping[str, Mapping[str, float]] = _published("engine_host_costs")
    host_engine: str = ""  # whose host costs the four above are ("": the packaged defaults)
    # time GEMMs from aiconfigurator's measured tables where a GPU has one (mode "operator-data"); off by
    # default: on the public measurements it is less accurate than the fitted factors (docs/sizing.md)
    operator_data: bool = False
    mode: str = "default-factors"
    per_gpu: Mapping[str, GpuFactors] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problems = []
        if self.mode not in MODES:
            problems.append(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not isinstance(self.host_overlap, (int, float)) or not 0 <= self.host_overlap <= 1:
            problems.append(f"host_overlap must be in [0, 1], got {self.host_overlap!r}")
        for name in ("compute_efficiency", "memory_efficiency", "link_efficiency", "cpu_compute_efficiency",
                     "cpu_memory_efficiency", "moe_efficiency"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0 < v <= 1:
                problems.append(f"{name} must be in (0, 1], got {v!r}")
        for name in ("step_overhead_ms", "reserve_fraction", "allreduce_latency_us", "cpu_step_overhead_ms",
                     "host_step_ms", "host_seq_us", "front_end_ms", "server_latency_ms"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0:
                problems.append(f"{name} must be >= 0, got {v!r}")
        for name in ("gemm_half_tokens", "kernel_overhead_us", "prefill_kernel_overhead_us"):
            v = getattr(self, name)
            if v is None and name == "prefill_kernel_overhead_us":
                continue
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0:
                problems.append(f"{name} must be >= 0, got {v!r}")
        m = self.moe_memory_efficiency
        if m is not None and (not isinstance(m, (int, float)) or isinstance(m, bool) or not 0 < m <= 1.5):
            problems.append(f"moe_memory_efficiency must be in (0, 1.5] or null, got {m!r}")
        a = self.attention_compute_efficiency
        if a is not None and (not isinstance(a, (int, float)) or not 0 < a <= 1):
            problems.append(f"attention_compute_efficiency must be in (0, 1] or null, got {a!r}")
        if not isinstance(self.token_budget, int) or isinstance(self.token_budget, bool) or self.token_budget < 1:
            problems.append(f"token_budget must be a positive integer, got {self.token_budget!r}")
        k = self.kv_output_share
        if not isinstance(k, (int, float)) or isinstance(k, bool) or not 0 <= k <= 1:
            problems.append(f"kv_output_share must be in [0, 1], got {k!r}")
        if not isinstance(self.decode_cuda_graphs, bool):
            problems.append(f"decode_cuda_graphs must be true or false, got {self.decode_cuda_graphs!r}")
        for label in ("dtype_compute_scale", "moe_compute_scale"):
            for k, v in getattr(self, label).items():
                if not isinstance(v, (int, float)) or not 0 < v <= 1:
                    problems.append(f"{label}[{k}] must be in (0, 1], got {v!r}")
        for engine, costs in self.engine_host_costs.items():
            for k, v in (costs or {}).items():
                if (k not in HOST_COSTS or not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0
                        or (k == "host_overlap" and v > 1)):
                    problems.append(f"engine_host_costs[{engine}].{k}: expected one of {', '.join(HOST_COSTS)} "
                                    f">= 0 (host_overlap <= 1), got {v!r}")
        for k, v in self.quant_memory_efficiency.items():
            if not isinstance(v, (int, float)) or not 0 < v <= 1:
                problems.append(f"quant_memory_efficiency[{k}] must be in (0, 1], got {v!r}")
        if problems:
            raise ConfigError(problems, source="efficiency factors")

    # -- construction ---------------------------------------------------------------

    @classmethod
    def defaults(cls, catalog=None) -> "Factors":
        """Defaults from the catalog's ``efficiency`` section (with their sources)."""
        from rightsizer.sizing.catalog import default_catalog

        eff = (catalog or default_catalog()).efficiency
        kwargs: dict[str, Any] = {}
        sources: dict[str, str] = {}
        for name in ("compute_efficiency", "memory_efficiency", "step_overhead_ms", "quant_memory_efficiency",
                     "reserve_bytes", "reserve_fraction", "allreduce_latency_us", "link_efficiency",
                     "cpu_compute_efficiency", "cpu_memory_efficiency", "cpu_step_overhead_ms",
                     "dtype_compute_scale", "gemm_half_tokens", "attention_compute_efficiency",
                     "kernel_overhead_us", "prefill_kernel_overhead_us", "moe_efficiency",
                     "moe_memory_efficiency", "moe_compute_scale", "token_budget", "kv_output_share",
                     "decode_cuda_graphs", "host_step_ms", "host_seq_us", "host_overlap", "front_end_ms",
                     "server_latency_ms", "engine_host_costs"):
            if name in eff:
                kwargs[name] = eff[name]["value"]
                sources[name] = " ".join(str(eff[name]["source"]).split())
        return cls(**kwargs, sources=sources)

    @classmethod
    def roofline(cls) -> "Factors":
        """Pure roofline: 100% of peak FLOP/s and bandwidth, no per-step overhead."""
        return cls(compute_efficiency=1.0, memory_efficiency=1.0, step_overhead_ms=0.0,
                   quant_memory_efficiency={"int8": 1.0, "int4": 1.0, "nf4": 1.0, "fp8": 1.0},
                   allreduce_latency_us=0.0, link_efficiency=1.0, cpu_compute_efficiency=1.0,
                   cpu_memory_efficiency=1.0, cpu_step_overhead_ms=0.0, dtype_compute_scale={},
                   gemm_half_tokens=0.0, kernel_overhead_us=0.0, prefill_kernel_overhead_us=None,
                   moe_efficiency=1.0, moe_memory_efficiency=None, moe_compute_scale={}, host_step_ms=0.0,
                   host_seq_us=0.0, front_end_ms=0.0, server_latency_ms=0.0, engine_host_costs={},
                   mode="roofline")

    def for_engine(self, engine: str | None) -> "Factors":
        """These factors with ``engine``'s host costs (``engine_host_costs``); ``"none"``: no host
        costs (the GPU's work alone, as for engines whose host hides behind a big model's);
        unchanged for None or an engine without its own (the default engine's apply)."""
        if engine == NO_HOST:
            return replace(self, host_engine=NO_HOST, **{k: 0.0 for k in HOST_COSTS})
        costs = self.engine_host_costs.get(engine or "")
        return replace(self, host_engine=str(engine), **{k: float(v) for k, v in costs.items()}) if costs else self

    def engines(self) -> list[str]:
        """The serving engines with host costs of their own, and ``"none"``."""
        return sorted(self.engine_host_costs) + [NO_HOST]

    def for_gpu(self, gpu_name: str, kind: str = "gpu") -> tuple[float, float, float, str]:
        """(compute_eff, memory_eff, overhead_ms, mode) for one device (``kind`` "cpu": the CPU defaults)."""
        fitted = self.per_gpu.get(gpu_name)
        if fitted is not None:
            return fitted.compute_efficiency, fitted.memory_efficiency, fitted.step_overhead_ms, "calibrated"
        mode = "roofline" if self.mode == "roofline" else "default-factors"
        if kind == "cpu":
            return self.cpu_compute_efficiency, self.cpu_memory_efficiency, self.cpu_step_overhead_ms, mode
        return self.compute_efficiency, self.memory_efficiency, self.step_overhead_ms, mode

    def op_efficiency(self, gpu_name: str, compute_dtype: str, kind: str = "gpu",
                      precision: str | None = None) -> OpEfficiency | None:
        """Per-op efficiency of one GPU for weights computing in ``compute_dtype``; None on CPUs, in
        roofline mode and on calibrated devices (every op at the flat factors of :meth:`for_gpu`)."""
        if kind == "cpu" or self.mode == "roofline" or gpu_name in self.per_gpu:
            return None  # a calibrated device was fitted with flat factors: keep them flat
        ce, me, _, _ = self.for_gpu(gpu_name, kind)
        table = gemm_table(gpu_name, precision) if (self.operator_data and precision) else None
        return OpEfficiency(compute=ce, memory=me, dtype_scale=float(self.dtype_compute_scale.get(compute_dtype, 1.0)),
                            gemm_half_tokens=self.gemm_half_tokens, attention=self.attention_compute_efficiency,
                            kernel_us=self.kernel_overhead_us, prefill_kernel_us=self.prefill_kernel_overhead_us,
                            moe=self.moe_efficiency, moe_memory=self.moe_memory_efficiency,
                            moe_dtype_scale=float(self.moe_compute_scale.get(compute_dtype, 1.0)), gemm_table=table)

    def floors_for(self, gpu_name: str) -> tuple[float, float]:
        """(prefill, decode) host-bound floors in ms: a step never runs faster than the host can
        launch it (fitted; 0 unless calibrated on a launch-bound framework such as eager PyTorch)."""
        fitted = self.per_gpu.get(gpu_name)
        return (fitted.prefill_floor_ms, fitted.decode_floor_ms) if fitted else (0.0, 0.0)

    def layer_costs_for(self, gpu_name: str) -> tuple[float, float]:
        """(prefill, decode) host cost per decoder layer in ms of a calibrated device (0 otherwise)."""
        fitted = self.per_gpu.get(gpu_name)
        return (fitted.prefill_layer_ms, fitted.decode_layer_ms) if fitted else (0.0, 0.0)

    # -- persistence -------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "compute_efficiency": self.compute_efficiency,
            "memory_efficiency": self.memory_efficiency, "step_overhead_ms": self.step_overhead_ms,
            "quant_memory_efficiency": dict(self.quant_memory_efficiency), "reserve_bytes": self.reserve_bytes,
            "reserve_fraction": self.reserve_fraction, "allreduce_latency_us": self.allreduce_latency_us,
            "link_efficiency": self.link_efficiency, "cpu_compute_efficiency": self.cpu_compute_efficiency,
            "cpu_memory_efficiency": self.cpu_memory_efficiency, "cpu_step_overhead_ms": self.cpu_step_overhead_ms,
            "dtype_compute_scale": dict(self.dtype_compute_scale), "gemm_half_tokens": self.gemm_half_tokens,
            "attention_compute_efficiency": self.attention_compute_efficiency,
            "kernel_overhead_us": self.kernel_overhead_us,
            "prefill_kernel_overhead_us": self.prefill_kernel_overhead_us, "moe_efficiency": self.moe_efficiency,
            "moe_memory_efficiency": self.moe_memory_efficiency, "moe_compute_scale": dict(self.moe_compute_scale),
            "token_budget": self.token_budget, "kv_output_share": self.kv_output_share,
            "decode_cuda_graphs": self.decode_cuda_graphs, "host_step_ms": self.host_step_ms, "host_seq_us": self.host_seq_us,
            "host_overlap": self.host_overlap,
            "engine_host_costs": {k: dict(v) for k, v in self.engine_host_costs.items()},
            "host_engine": self.host_engine,
            "front_end_ms": self.front_end_ms, "server_latency_ms": self.server_latency_ms,
            "operator_data": self.operator_data,
            "per_gpu": {k: v.to_dict() for k, v in sorted(self.per_gpu.items())},
            "sources": dict(self.sources),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Factors":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown calibration fields: {', '.join(unknown)}", source="calibration")
        kwargs = dict(data)
        kwargs["per_gpu"] = {k: GpuFactors(**v) for k, v in (data.get("per_gpu") or {}).items()}
        return cls(**kwargs)

    def save(self, path: str | os.PathLike) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Factors":
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read calibration file: {exc}", source=os.fspath(path)) from None
        return cls.from_dict(data)


def factors_for_engine(engine: str | None, factors: Factors | None = None) -> Factors:
    """``factors`` (the packaged defaults when None) with a serving engine's host costs
    (``Factors.for_engine``); None or "" keeps them. A ConfigError naming the known engines for
    any other name."""
    f = factors or Factors.defaults()
    if engine and engine not in f.engines():
        raise ConfigError(f"serving engine {engine!r}: expected one of {', '.join(f.engines())} "
                          "(host costs per engine: rightsizer/data/gpus.yaml engine_host_costs)")
    return f.for_engine(engine or None)


# --------------------------------------------------------------------------- fitting


def _measurement_problems(m: Any, i: int) -> list[str]:
    if not isinstance(m, Mapping):
        return [f"measurement {i}: must be a mapping"]
    out = []
    for key in ("gpu", "flops", "bytes", "measured_ms"):
        if key not in m:
            out.append(f"measurement {i}: missing {key!r}")
    for key in ("flops", "bytes"):
        if key in m and (not isinstance(m[key], (int, float)) or m[key] < 0):
            out.append(f"measurement {i}: {key} must be >= 0")
    if "measured_ms" in m and (not isinstance(m["measured_ms"], (int, float)) or m["measured_ms"] <= 0):
        out.append(f"measurement {i}: measured_ms must be > 0")
    if "layers" in m and (not isinstance(m["layers"], int) or isinstance(m["layers"], bool) or m["layers"] < 1):
        out.append(f"measurement {i}: layers must be a whole number >= 1 (the model's decoder layers)")
    return out


def _hardware(m: Mapping[str, Any], catalog) -> tuple[float, float]:
    """(peak FLOP/s, bandwidth bytes/s) of the measured device."""
    if "peak_flops" in m and "bandwidth" in m:
        return float(m["peak_flops"]), float(m["bandwidth"])
    if m["gpu"] == "cpu-local":
        raise ConfigError("a 'cpu-local' measurement needs 'peak_flops' and 'bandwidth' of that CPU")
    gpu = catalog.get(m["gpu"])
    return gpu.peak_flops(m.get("compute", "bf16")), gpu.memory_bandwidth


def _solve3(rows: list[tuple[float, float, float]], ts: list[float], ws: list[float]) -> tuple[float, float, float]:
    """Weighted least squares for t = a*x + b*y + c (tiny 3x3 normal equations)."""
    import numpy as np

    A = np.array(rows, dtype=float) * np.sqrt(np.array(ws))[:, None]
    y = np.array(ts, dtype=float) * np.sqrt(np.array(ws))
    sol, *_ = np.linalg.lstsq(A, y, rcond=None)
    return float(sol[0]), float(sol[1]), float(sol[2])


def _fit_scales(points: list[tuple[float, float, float]], base: Factors) -> tuple[float, float, float]:
    """Fit 1/compute_eff, 1/memory_eff and overhead (s) to t = max(a*cs, b*ms) + c."""
    a, b, c = 1 / base.compute_efficiency, 1 / base.memory_efficiency, base.step_overhead_ms / 1e3
    for _ in range(20):
        rows, ts, ws = [], [], []
        for cs, ms, t in points:
            compute_bound = a * cs >= b * ms
            rows.append((cs if compute_bound else 0.0, 0.0 if compute_bound else ms, 1.0))
            ts.append(t)
            ws.append(1.0 / (t * t))  # relative error
        has_c = any(r[0] for r in rows)
        has_m = any(r[1] for r in rows)
        if len(points) >= 3:
            na, nb, nc = _solve3(rows, ts, ws)
        else:
            na, nb, nc = a, b, c
        if not has_c:
            na = a
        if not has_m:
            nb = b
        if len(points) < 3 or nc < 0 or na <= 0 or nb <= 0:
            # Too few points or a negative overhead: keep the overhead, fit the scales alone.
            nc = max(0.0, c if len(points) < 3 else 0.0)
            cs_r = [(cs, t - nc) for (cs, ms, t), r in zip(points, rows) if r[0]]
            ms_r = [(ms, t - nc) for (cs, ms, t), r in zip(points, rows) if r[1]]
            na = sum(y for _, y in cs_r) / sum(x for x, _ in cs_r) if cs_r else a
            nb = sum(y for _, y in ms_r) / sum(x for x, _ in ms_r) if ms_r else b
        na, nb = max(na, 1.0), max(nb, 1.0)  # efficiency <= 100%
        if abs(na - a) < 1e-9 and abs(nb - b) < 1e-9 and abs(nc - c) < 1e-12:
            break
        a, b, c = na, nb, max(nc, 0.0)
    return a, b, c


def _fit_with_layers(pts: list[tuple[float, float, float, str, int]], base: Factors) -> GpuFactors:
    """Fit t = max(a*cs, b*ms) + c + k_phase * layers (relative error, scipy least squares): an
    eager framework pays a host cost per layer on top of the roofs, more in a prefill step."""
    import numpy as np
    from scipy.optimize import least_squares

    cs, ms, t = (np.array([p[i] for p in pts], dtype=float) for i in range(3))
    layers = np.array([p[4] for p in pts], dtype=float)
    is_prefill = np.array([p[3] == "prefill" for p in pts])

    def predict(x):
        a, b, c, kp, kd = x
        return np.maximum(a * cs, b * ms) + c + np.where(is_prefill, kp, kd) * layers

    start = [1 / base.compute_efficiency, 1 / base.memory_efficiency, base.step_overhead_ms / 1e3, 0.0, 0.0]
    # 1/efficiency >= 1 (at most the peak), costs >= 0
    fit = least_squares(lambda x: predict(x) / t - 1, start, bounds=([1, 1, 0, 0, 0], [1e4, 1e4, 10, 1, 1]))
    a, b, c, kp, kd = fit.x
    rms = float(np.sqrt(np.mean((predict(fit.x) / t - 1) ** 2)))
    return GpuFactors(compute_efficiency=round(1 / a, 4), memory_efficiency=round(1 / b, 4),
                      step_overhead_ms=round(c * 1e3, 4), samples=len(pts), rms_relative_error=round(rms, 4),
                      prefill_layer_ms=round(kp * 1e3, 4), decode_layer_ms=round(kd * 1e3, 4))


def fit_device(points: list[tuple[float, float, float]] | list[tuple[float, float, float, str]]
               | list[tuple[float, float, float, str, int]], base: Factors) -> GpuFactors:
    """Fit (compute_eff, memory_eff, overhead, per-phase host floors) to measured steps.

    Each point is (compute_s, memory_s, measured_s[, phase]) with compute_s = FLOPs/peak and
    memory_s = bytes/bandwidth at 100% efficiency. Eager frameworks are launch-bound on small
    steps: latency stops falling with the work. Such a phase gets a floor (its fastest
    measurement) and the efficiencies are fitted on the points well above the floors.

    Points that also name their model's decoder layers (a fifth item), from models of at least
    two depths and five points in all, fit a host cost per layer and phase instead of floors
    (``_fit_with_layers``): it carries over to a model of another depth, a floor does not.
    """
    if (len(points) >= 5 and all(len(p) > 4 and p[4] for p in points)
            and len({p[4] for p in points}) >= 2):
        return _fit_with_layers(points, base)
    pts = [(p[0], p[1], p[2], p[3] if len(p) > 3 else "any") for p in points]
    a, b, c = _fit_scales([p[:3] for p in pts], base)
    floors: dict[str, float] = {}
    for phase in {p[3] for p in pts}:
        phase_pts = [p for p in pts if p[3] == phase]
        fastest = min(phase_pts, key=lambda p: p[2])
        if fastest[2] > 1.3 * (max(a * fastest[0], b * fastest[1]) + c) and len(phase_pts) >= 2:
            floors[phase] = fastest[2]
    if floors:
        above = [p for p in pts if p[2] > 1.2 * floors.get(p[3], 0.0)]
        a, b, c = _fit_scales([p[:3] for p in above], base) if above else (
            1 / base.compute_efficiency, 1 / base.memory_efficiency, base.step_overhead_ms / 1e3)
        floors = {ph: max(0.0, f - c) for ph, f in floors.items()}

    def predict(p):
        return max(a * p[0], b * p[1], floors.get(p[3], 0.0)) + c

    rms = math.sqrt(sum(((predict(p) - p[2]) / p[2]) ** 2 for p in pts) / len(pts))
    return GpuFactors(compute_efficiency=round(1 / a, 4), memory_efficiency=round(1 / b, 4),
                      step_overhead_ms=round(c * 1e3, 4), samples=len(pts), rms_relative_error=round(rms, 4),
                      prefill_floor_ms=round(floors.get("prefill", 0.0) * 1e3, 4),
                      decode_floor_ms=round(floors.get("decode", 0.0) * 1e3, 4))


def fit_calibration(measurements: Iterable[Mapping[str, Any]], base: Factors | None = None,
                    catalog=None) -> Factors:
    """Fit efficiency factors per device from measured latencies.

    Each measurement: ``{"gpu": name or "cpu-local", "phase": "prefill"|"decode", "flops": F,
    "bytes": B, "measured_ms": t}``; optional ``"compute"`` (dtype of the peak, default bf16) and,
    for devices outside the catalog such as ``cpu-local``, ``"peak_flops"`` and ``"bandwidth"``;
    ``"layers"`` (the model's decoder layers) lets the fit learn a host cost per layer.
    The FLOPs and bytes of a whole forward step come from ``Estimate.prefill`` / ``.decode``.
    Returns ``Factors`` in "calibrated" mode, defaults kept for devices not measured.
    """
    from rightsizer.sizing.catalog import default_catalog

    catalog = catalog or default_catalog()
    base = base or Factors.defaults(catalog)
    items = list(measurements)
    problems = [p for i, m in enumerate(items) for p in _measurement_problems(m, i)]
    if not items:
        problems.append("no measurements given")
    if problems:
        raise ConfigError(problems, source="calibration measurements")
    by_device: dict[str, list[tuple]] = {}
    for m in items:
        peak, bw = _hardware(m, catalog)
        name = m["gpu"] if m["gpu"] == "cpu-local" else catalog.get(m["gpu"]).name
        by_device.setdefault(name, []).append(
            (m["flops"] / peak, m["bytes"] / bw, m["measured_ms"] / 1e3, str(m.get("phase", "any")),
             int(m.get("layers", 0))))
    per_gpu = dict(base.per_gpu)
    for name, points in by_device.items():
        per_gpu[name] = fit_device(points, base)
    return replace(base, mode="calibrated", per_gpu=per_gpu)
