"""Device kinds a group can run on, and one demand sized alone on each.

For every device kind the price list offers (a whole GPU, 2/4/8 GPUs in tensor parallel, a
MIG profile, a CPU instance type) the sizing engine gives each model's memory (weights + KV
for its concurrency + activations; the runtime reserve is counted once per device, not per
model) and its busy fraction (required throughput / the throughput it reaches there within
its TTFT and TPOT targets).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Iterable

from rightsizer.plan.demand import Demand
from rightsizer.plan.pack import Load
from rightsizer.sizing import Factors, Workload, estimate
from rightsizer.sizing.catalog import GPU, Catalog
from rightsizer.sizing.estimate import TP_COUNTS, Estimate, tp_problem
from rightsizer.sizing.params import ModelSpec, ParamCount
from rightsizer.sizing.recommend import precision_for

GIB = 2**30


@dataclass(frozen=True)
class DeviceKind:
    """One way to run a group: a GPU (x count in tensor parallel), a MIG slice, a CPU instance."""

    key: str
    kind: str  # "gpu", "mig", "cpu"
    device: GPU  # the catalog entry (the base GPU for a MIG slice)
    count: int = 1
    mig: str | None = None

    @property
    def view(self) -> GPU:
        return self.device.slice(self.mig) if self.mig else self.device

    @property
    def price_per_hour(self) -> float:
        return self.view.price_per_hour * self.count

    @property
    def label(self) -> str:
        if self.mig:
            return f"{self.device.name} MIG {self.mig}"
        if self.kind == "cpu":
            return f"{self.device.name} ({self.device.vcpus} vCPU)"
        return f"{self.count}x {self.device.name}"


def device_kinds(catalog: Catalog, include_cpu: bool = True, include_mig: bool = True,
                 devices: Iterable[str] | None = None) -> list[DeviceKind]:
    """Every priced device kind, cheapest first."""
    wanted = {catalog.get(d).name for d in devices} if devices else None
    kinds: list[DeviceKind] = []
    for dev in catalog.priced(include_cpu=include_cpu):
        if wanted is not None and dev.name not in wanted:
            continue
        if dev.is_cpu:
            kinds.append(DeviceKind(dev.name, "cpu", dev))
            continue
        for n in TP_COUNTS:
            if n <= dev.max_count:
                kinds.append(DeviceKind(dev.name if n == 1 else f"{dev.name}-x{n}", "gpu", dev, count=n))
        if include_mig:
            for prof in dev.mig_profiles:
                if prof.compute_fraction < 1.0:
                    kinds.append(DeviceKind(f"{dev.name}-mig-{prof.name}", "mig", dev, mig=prof.name))
    kinds.sort(key=lambda k: (k.price_per_hour, k.view.memory_bytes))
    return kinds


# --------------------------------------------------------------------------- sizing one model


@dataclass
class Sized:
    """One demand alone on one kind: the estimate the plan keeps (its batch, memory split)."""

    load: Load
    batch: int
    precision: str
    weights_bytes: int  # per GPU
    kv_bytes: int  # per GPU
    activation_bytes: int
    reserve_bytes: int
    ttft_ms: float
    tpot_ms: float
    throughput_tokens_per_s: float  # at this batch, one device
    mode: str
    estimate: Estimate | None = field(default=None, repr=False, compare=False)  # its step model: ``tail``


def size_on(dem: Demand, spec: ModelSpec, params: ParamCount, dk: DeviceKind, factors: Factors,
            headroom: float) -> tuple[Sized | None, str]:
    """The demand alone on ``dk``: the smallest batch (from the workload's, doubling) whose busy
    fraction is within the headroom, or the largest that still meets the SLO and fits."""
    view = dk.view
    prec, why = precision_for(view, dem.precision)
    if why:
        return None, why
    if dk.count > 1 and tp_problem(spec, dk.device, dk.count):
        return None, tp_problem(spec, dk.device, dk.count)

    def est(batch):
        return estimate(spec, dk.device, Workload(dem.prompt_tokens, dem.output_tokens, batch, prec),
                        count=dk.count, mig=dk.mig, factors=factors, spec=spec, params=params)

    e = est(dem.batch)
    if not e.fits:
        return None, f"needs {e.memory_per_gpu_bytes / GIB:.2f} GiB per device, {dk.label} has {view.memory_bytes / GIB:.2f}"
    if e.served_ttft_ms > dem.ttft_ms or e.served_tpot_ms > dem.tpot_ms:
        return None, (f"alone: TTFT {e.served_ttft_ms:.1f} ms / TPOT {e.served_tpot_ms:.2f} ms vs "
                      f"{dem.ttft_ms:g} / {dem.tpot_ms:g}")
    batch = dem.batch
    while dem.throughput_tokens_per_s / e.throughput_tokens_per_s > headroom and batch * 2 <= e.max_batch:
        trial = est(batch * 2)
        if not trial.fits or trial.served_ttft_ms > dem.ttft_ms or trial.served_tpot_ms > dem.tpot_ms:
            break
        e, batch = trial, batch * 2
    share = 1 / min(dk.count, spec.kv_heads)
    kv = int(math.ceil(e.kv_bytes * share))
    weights = int(math.ceil(e.weights_bytes / dk.count))
    load = Load(memory_bytes=weights + kv + e.activation_bytes,
                busy=dem.throughput_tokens_per_s / e.throughput_tokens_per_s, ttft_ms=e.served_ttft_ms,
                tpot_ms=e.served_tpot_ms)
    return Sized(load, batch, prec, weights, kv, e.activation_bytes, e.reserve_bytes, e.served_ttft_ms, e.served_tpot_ms,
                 e.throughput_tokens_per_s, e.mode, e), ""


def with_front(deferred: Sized, front: Sized) -> Sized:
    """A cascade on one kind as one load (both models in one process, ``rightsizer.serving.cascade``):
    memory and busy add; a deferred request is answered by the small model, then the big one,
    so the TTFTs add; each token comes from one of them (the slower TPOT)."""
    load = Load(memory_bytes=deferred.load.memory_bytes + front.load.memory_bytes,
                busy=deferred.load.busy + front.load.busy, ttft_ms=deferred.load.ttft_ms + front.load.ttft_ms,
                tpot_ms=max(deferred.load.tpot_ms, front.load.tpot_ms))
    return replace(deferred, load=load, ttft_ms=load.ttft_ms, tpot_ms=load.tpot_ms)


def reserve_bytes(dk: DeviceKind, factors: Factors) -> int:
    """One runtime reserve per process on each device (the estimator's per-GPU reserve)."""
    return int(factors.reserve_bytes + factors.reserve_fraction * dk.view.memory_bytes)


def resources(dk: DeviceKind, used_bytes: int) -> tuple[str | None, int, dict[str, str], dict[str, str]]:
    """(resource name, count, node selector, requests) of a group on ``dk``."""
    dev = dk.device
    if dk.kind == "cpu":
        mem_gib = max(1, math.ceil(used_bytes / GIB))
        return None, 0, {"node.kubernetes.io/instance-type": dev.name}, {"cpu": str(dev.vcpus), "memory": f"{mem_gib}Gi"}
    selector = {"nvidia.com/gpu.product": dev.product_label} if dev.product_label else {}
    if dk.mig:
        return f"nvidia.com/mig-{dk.mig}", 1, selector, {}
    resource = "amd.com/gpu" if dev.vendor == "amd" else "nvidia.com/gpu"
    return resource, dk.count, selector, {}


__all__ = ["DeviceKind", "device_kinds", "Sized", "size_on", "with_front", "reserve_bytes", "resources", "GIB"]
