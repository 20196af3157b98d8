"""The fleet plan: pack every task's chosen model onto the cheapest set of devices.

Input: the decision records ``size_gpu`` writes (``rightsizer.size_gpu.build_record``): per
task the chosen model (its config, precision), the workload (prompt and output tokens, the
concurrency ``batch``) and the SLO (TTFT, TPOT, throughput). For every device kind the
price list offers (a whole GPU, 2/4/8 GPUs in tensor parallel, a MIG profile, a CPU
instance type) the sizing engine gives each model's memory (weights + KV for its
concurrency + activations; the runtime reserve is counted once per device, not per model)
and its busy fraction (required throughput / the throughput it reaches there within its
TTFT and TPOT targets). :mod:`rightsizer.plan.pack` then packs the models into groups.

The baseline fleet is planned the same way: the largest candidate (bf16) as one model
carrying every task's traffic.

No MLRun here: a pipeline step calls ``plan_fleet(load_decisions(path))``.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from rightsizer.sizing.engines import serving_engine
from rightsizer.errors import ConfigError, InsufficientMemory, NoFeasibleOption
from rightsizer.layout import RunLayout, find_decisions, latest_run
from rightsizer.plan.pack import MAX_REPLICAS, Kind, Load, Solution, Target, solve
from rightsizer.sizing import Factors, Workload, default_catalog, estimate, load_catalog
from rightsizer.sizing.catalog import GPU, Catalog
from rightsizer.sizing.estimate import TP_COUNTS, tp_problem
from rightsizer.sizing.params import ModelSpec, ParamCount, count_spec, model_spec
from rightsizer.sizing.prices import DEFAULT_PRICE_LIST
from rightsizer.sizing.recommend import precision_for

DEFAULT_HEADROOM = 0.8
GIB = 2**30


# --------------------------------------------------------------------------- inputs


@dataclass
class Demand:
    """One model to place: what it is, what it must carry, and its targets."""

    name: str  # unique in the fleet (the task, or "baseline")
    tasks: list[str]
    model: str
    config: Any
    precision: str
    prompt_tokens: int
    output_tokens: int
    batch: int  # concurrent sequences the workload keeps in flight
    ttft_ms: float
    tpot_ms: float
    throughput_tokens_per_s: float  # required output tokens/s
    demand_source: str  # where the required throughput comes from

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tasks": list(self.tasks), "model": self.model, "precision": self.precision,
                "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens, "batch": self.batch,
                "slo": {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms},
                "throughput_tokens_per_s": self.throughput_tokens_per_s, "demand_source": self.demand_source}


def load_decisions(path: str | Path) -> list[dict]:
    """Decision records from a path: an artifact root (``<root>/rightsizer/<task>/size_gpu/decision.json``),
    the report's ``decisions.json`` (``{"records": [...]}``), one record, a list of records, or a
    folder of record files. Sorted by task."""
    p = Path(path)
    if p.is_dir():
        p = latest_run(p)  # a folder of runs (<run id>/): the latest one
        found = find_decisions(p)
        if found:
            return _sorted([_read(f) for f in found.values()])
        report = RunLayout(p).decisions_file()
        if report.is_file():
            return load_decisions(report)
        files = sorted(p.glob("*.json")) or sorted(p.glob("*/decision.json"))
        if not files:
            raise ConfigError(f"no decision records under {p} (looked for rightsizer/<task>/size_gpu/decision.json, "
                              "rightsizer/report/decisions.json and *.json)", source="decisions")
        records: list[dict] = []
        for f in files:
            records.extend(_as_records(_read(f), f))
        return _sorted(records)
    if not p.is_file():
        raise ConfigError(f"no such file or folder: {p}", source="decisions")
    return _sorted(_as_records(_read(p), p))


def _read(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read decision record: {exc}", source=str(path)) from None


def _as_records(data: Any, path: Path) -> list[dict]:
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        data = data["records"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) and "task" in r and "chosen" in r for r in data):
        raise ConfigError("not a decision record (needs 'task' and 'chosen') nor a list of them", source=str(path))
    return data


def _sorted(records: list[dict]) -> list[dict]:
    return sorted(records, key=lambda r: str(r["task"]))


def _required(slo: dict, batch: int) -> tuple[float, str]:
    target = float(slo.get("throughput_tokens_per_s") or 0)
    if target > 0:
        return target, "slo.throughput_tokens_per_s"
    # no throughput target: the workload's concurrency, every sequence decoding at the TPOT target
    return batch * 1000.0 / float(slo["tpot_ms"]), "workload.batch x 1000 / slo.tpot_ms (no throughput target)"


def _config_of(side: dict, task: str, which: str) -> Any:
    config = side.get("config")
    if config:
        return config
    model = side.get("model")
    if not model:
        raise ConfigError(f"decision of task {task!r}: {which} has neither 'config' nor 'model'", source="decisions")
    return model  # a config path, model folder or hub id the sizing engine resolves


def demands_from_decisions(decisions: Iterable[dict]) -> list[Demand]:
    """One :class:`Demand` per task: its chosen model, workload and SLO."""
    out = []
    problems = []
    for d in decisions:
        task = str(d.get("task"))
        try:
            c, wl, slo = d["chosen"], d["workload"], d["slo"]
            req, src = _required(slo, int(wl["batch"]))
            out.append(Demand(name=task, tasks=[task], model=str(c.get("model", task)),
                              config=_config_of(c, task, "chosen"), precision=str(c.get("precision") or "bf16"),
                              prompt_tokens=int(wl["prompt_tokens"]), output_tokens=int(wl["output_tokens"]),
                              batch=int(wl["batch"]), ttft_ms=float(slo["ttft_ms"]), tpot_ms=float(slo["tpot_ms"]),
                              throughput_tokens_per_s=req, demand_source=src))
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"decision of task {task!r}: missing or bad field {exc}")
    if problems:
        raise ConfigError(problems, source="decisions")
    if not out:
        raise ConfigError("no decisions to plan", source="decisions")
    names = [x.name for x in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"two decisions for the same task: {sorted(n for n in names if names.count(n) > 1)}",
                          source="decisions")
    return out


def baseline_demand(decisions: list[dict]) -> Demand:
    """The one-big-model baseline: the largest baseline candidate (by parameters), bf16, carrying
    every task's traffic: the tasks' throughputs and concurrencies add up, the longest prompt
    and output and the tightest TTFT and TPOT hold for all."""
    sides = [(d, d.get("baseline") or {}) for d in decisions]
    d0, big = max(sides, key=lambda x: float(x[1].get("params") or 0))
    tasks = [str(d["task"]) for d in decisions]
    reqs = [_required(d["slo"], int(d["workload"]["batch"])) for d in decisions]
    return Demand(
        name="baseline", tasks=tasks, model=str(big.get("model", "baseline")),
        config=_config_of(big, str(d0["task"]), "baseline"), precision="bf16",
        prompt_tokens=max(int(d["workload"]["prompt_tokens"]) for d in decisions),
        output_tokens=max(int(d["workload"]["output_tokens"]) for d in decisions),
        batch=sum(int(d["workload"]["batch"]) for d in decisions),
        ttft_ms=min(float(d["slo"]["ttft_ms"]) for d in decisions),
        tpot_ms=min(float(d["slo"]["tpot_ms"]) for d in decisions),
        throughput_tokens_per_s=sum(r for r, _ in reqs),
        demand_source="sum over tasks of " + "; ".join(sorted({s for _, s in reqs})))


# --------------------------------------------------------------------------- device kinds


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


def _size(dem: Demand, spec: ModelSpec, params: ParamCount, dk: DeviceKind, factors: Factors,
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
                 e.throughput_tokens_per_s, e.mode), ""


# --------------------------------------------------------------------------- the plan


@dataclass
class Placement:
    """One model in a group: its memory split (per device), busy fraction and latency while sharing."""

    name: str
    tasks: list[str]
    model: str
    precision: str
    batch: int
    weights_bytes: int
    kv_bytes: int
    activation_bytes: int
    busy_fraction: float  # at its whole traffic on one device
    busy_per_replica: float  # with the traffic split over the group's replicas
    throughput_tokens_per_s: float  # required
    ttft_ms: float  # alone on the device
    tpot_ms: float
    ttft_shared_ms: float  # worst case while sharing (one step of every other member in between)
    tpot_shared_ms: float
    slo_ttft_ms: float
    slo_tpot_ms: float
    demand_source: str
    mode: str

    @property
    def memory_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "tasks": list(self.tasks), "model": self.model, "precision": self.precision,
                "batch": self.batch, "memory_bytes": self.memory_bytes,
                "memory": {"weights_bytes": self.weights_bytes, "kv_bytes": self.kv_bytes,
                           "activation_bytes": self.activation_bytes},
                "busy_fraction": self.busy_fraction, "busy_per_replica": self.busy_per_replica,
                "throughput_tokens_per_s": self.throughput_tokens_per_s,
                "ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms, "ttft_shared_ms": self.ttft_shared_ms,
                "tpot_shared_ms": self.tpot_shared_ms, "slo": {"ttft_ms": self.slo_ttft_ms, "tpot_ms": self.slo_tpot_ms},
                "meets_slo": self.ttft_shared_ms <= self.slo_ttft_ms and self.tpot_shared_ms <= self.slo_tpot_ms,
                "demand_source": self.demand_source, "sizing_mode": self.mode}


@dataclass
class Group:
    """One placement group: one serving function, one device (kind) per replica, its models."""

    name: str
    device_kind: str  # "gpu", "mig", "cpu"
    device: str  # catalog name (the base GPU for a MIG slice)
    label: str
    count: int  # GPUs per replica (tensor parallel)
    mig: str | None
    resource_name: str | None  # nvidia.com/gpu, nvidia.com/mig-1g.10gb, amd.com/gpu; None for CPU
    resource_count: int
    node_selector: dict[str, str]
    requests: dict[str, str]  # CPU groups: cpu and memory
    replicas: int  # devices the required traffic needs
    min_replicas: int
    max_replicas: int
    price_per_hour: float  # one replica
    memory_capacity_bytes: int  # per GPU
    reserve_bytes: int  # one runtime reserve per device
    headroom: float
    placements: list[Placement]

    @property
    def cost_per_hour(self) -> float:
        return self.price_per_hour * self.replicas

    @property
    def memory_used_bytes(self) -> int:
        return sum(p.memory_bytes for p in self.placements) + self.reserve_bytes

    @property
    def busy_per_replica(self) -> float:
        return sum(p.busy_per_replica for p in self.placements)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "device_kind": self.device_kind, "device": self.device, "label": self.label,
                "count": self.count, "mig": self.mig, "resource_name": self.resource_name,
                "resource_count": self.resource_count, "node_selector": dict(self.node_selector),
                "requests": dict(self.requests), "replicas": self.replicas, "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas, "price_per_hour": self.price_per_hour,
                "cost_per_hour": self.cost_per_hour, "memory_capacity_bytes": self.memory_capacity_bytes,
                "memory_used_bytes": self.memory_used_bytes, "reserve_bytes": self.reserve_bytes,
                "busy_per_replica": self.busy_per_replica, "headroom": self.headroom,
                "models": [p.to_dict() for p in self.placements]}

    def function_spec(self) -> dict[str, Any]:
        """What the deployment of this group would be: one serving function."""
        limits = {self.resource_name: self.resource_count} if self.resource_name else {}
        return {"name": f"serving-{self.name}", "group": self.name, "device": self.label,
                "resources": {"limits": limits, "requests": dict(self.requests)},
                "node_selector": dict(self.node_selector), "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "models": [{"name": p.name, "tasks": list(p.tasks), "model": p.model, "precision": p.precision,
                            "batch": p.batch} for p in self.placements]}


@dataclass
class FleetPlan:
    """The packed fleet: groups, totals, the solver, the price list; the baseline planned alike."""

    side: str  # "chosen" or "baseline"
    groups: list[Group]
    headroom: float
    solver: str
    price_list: dict[str, Any]
    demands: list[Demand]
    notes: list[str] = field(default_factory=list)
    baseline: "FleetPlan | None" = None
    baseline_error: str = ""
    quality: dict[str, dict[str, Any]] = field(default_factory=dict)  # per task, against its bar

    @property
    def cost_per_hour(self) -> float:
        return sum(g.cost_per_hour for g in self.groups)

    @property
    def throughput_tokens_per_s(self) -> float:
        return sum(d.throughput_tokens_per_s for d in self.demands)

    @property
    def cost_per_1m_output_tokens(self) -> float:
        t = self.throughput_tokens_per_s
        return self.cost_per_hour / (t * 3600) * 1e6 if t > 0 else math.inf

    @property
    def devices(self) -> int:
        return sum(g.replicas for g in self.groups)

    @property
    def memory_bytes(self) -> int:
        """Device memory held by the fleet (capacity of every device of every replica)."""
        return sum(g.memory_capacity_bytes * g.count * g.replicas for g in self.groups)

    def totals(self) -> dict[str, Any]:
        return {"cost_per_hour": self.cost_per_hour, "cost_per_1m_output_tokens": self.cost_per_1m_output_tokens,
                "throughput_tokens_per_s": self.throughput_tokens_per_s, "devices": self.devices,
                "groups": len(self.groups), "memory_bytes": self.memory_bytes,
                "memory_used_bytes": sum(g.memory_used_bytes * g.count * g.replicas for g in self.groups)}

    def function_specs(self) -> list[dict[str, Any]]:
        """Per group, the serving function to deploy; each model carries the ``load`` its engine
        is sized for (concurrent sequences, prompt and output tokens of its workload)."""
        demands = {d.name: d for d in self.demands}
        specs = [g.function_spec() for g in self.groups]
        for spec in specs:
            for m in spec["models"]:
                d = demands[m["name"]]
                m["load"] = {"batch": m["batch"], "prompt_tokens": d.prompt_tokens,
                             "output_tokens": d.output_tokens}
        return specs

    def placement_of(self, name: str) -> tuple[Group, Placement]:
        for g in self.groups:
            for p in g.placements:
                if p.name == name:
                    return g, p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        out = {"side": self.side, "solver": self.solver, "headroom": self.headroom,
               "price_list": dict(self.price_list), "totals": self.totals(),
               "groups": [g.to_dict() for g in self.groups], "demands": [d.to_dict() for d in self.demands],
               "notes": list(self.notes),
               # every group runs this project's engine; say what its sizing assumed
               "serving_engine": serving_engine(
                   ", ".join(sorted({p.mode for g in self.groups for p in g.placements})))}
        if self.side == "chosen":
            out["baseline"] = self.baseline.to_dict() if self.baseline else None
            out["baseline_error"] = self.baseline_error
            out["comparison"] = self.comparison()
            out["quality"] = {k: dict(v) for k, v in self.quality.items()}
        return out

    def comparison(self) -> dict[str, Any] | None:
        """The chosen fleet beside the baseline fleet, on the same price list and headroom."""
        if self.baseline is None:
            return None
        a, b = self.totals(), self.baseline.totals()
        saving = 1 - a["cost_per_hour"] / b["cost_per_hour"] if b["cost_per_hour"] > 0 else None
        return {"cost_per_hour": {"chosen": a["cost_per_hour"], "baseline": b["cost_per_hour"]},
                "cost_per_1m_output_tokens": {"chosen": a["cost_per_1m_output_tokens"],
                                              "baseline": b["cost_per_1m_output_tokens"]},
                "devices": {"chosen": a["devices"], "baseline": b["devices"]},
                "memory_bytes": {"chosen": a["memory_bytes"], "baseline": b["memory_bytes"]},
                "saving": saving}


def quality_of(decisions: Iterable[dict]) -> dict[str, dict[str, Any]]:
    """Per task, the chosen and the baseline model's quality against the task's bar, as the
    decision records give them; ``measured`` is false (``status`` "not measured") where a
    record has no score (an app spec's planned models: ``rightsizer.plan.app``)."""
    out = {}
    for d in decisions:
        chosen = (d.get("chosen") or {}).get("quality")
        base = (d.get("baseline") or {}).get("quality")
        measured = _score(chosen)
        out[str(d.get("task"))] = {
            "metric": d.get("metric"), "threshold": d.get("threshold"), "chosen": chosen if measured else None,
            "baseline": base if _score(base) else None,
            "measured": measured, "status": "measured" if measured else "not measured"}
    return out


def _score(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _resources(dk: DeviceKind, used_bytes: int) -> tuple[str | None, int, dict[str, str], dict[str, str]]:
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


def _infeasible(dem: Demand, reasons: dict[str, str], kinds: list[DeviceKind], catalog: Catalog,
                spec: ModelSpec, params: ParamCount, factors: Factors) -> NoFeasibleOption:
    """What the demand would need, for the error message."""
    plist = catalog.price_list_name or "(none)"
    memory_only = all(r.startswith("needs") for r in reasons.values()) if reasons else True
    if not kinds:
        return InsufficientMemory(f"price list {plist} offers no device for task {dem.name}")
    biggest = max(kinds, key=lambda k: (k.view.memory_bytes, -k.count))
    one = next((k for k in kinds if k.device is biggest.device and k.count == 1 and not k.mig), biggest)
    try:
        prec, _ = precision_for(one.view, dem.precision)
        e = estimate(spec, one.device, Workload(dem.prompt_tokens, dem.output_tokens, dem.batch, prec),
                     factors=factors, spec=spec, params=params)
        need = f"needs {e.memory_per_gpu_bytes / GIB:.1f} GiB on one device"
    except ConfigError:
        need = "cannot be sized"
    if memory_only:
        largest_tp = max((k for k in kinds if k.device is one.device and not k.mig), key=lambda k: k.count)
        return InsufficientMemory(
            f"task {dem.name} ({dem.model}, {dem.precision}, batch {dem.batch}, {dem.prompt_tokens}+{dem.output_tokens} "
            f"tokens) {need}; the largest device in price list {plist} is {one.device.name} with "
            f"{one.view.memory_bytes / GIB:.1f} GiB, and {largest_tp.count} of them in tensor parallel do not hold it "
            "either: use a lower precision, a shorter context or smaller batch, or a price list with larger devices")
    closest = sorted(reasons.items())[:4]
    return NoFeasibleOption(
        f"task {dem.name} ({dem.model}, {dem.precision}) meets TTFT <= {dem.ttft_ms:g} ms and TPOT <= "
        f"{dem.tpot_ms:g} ms on no device of price list {plist}: " + "; ".join(f"{k}: {v}" for k, v in closest))


def plan_demands(demands: list[Demand], catalog: Catalog, headroom: float = DEFAULT_HEADROOM,
                 factors: Factors | None = None, solver: str = "auto", include_cpu: bool = True,
                 include_mig: bool = True, devices: Iterable[str] | None = None, side: str = "chosen") -> FleetPlan:
    """Pack ``demands`` onto the cheapest devices of ``catalog``'s price list."""
    if not isinstance(headroom, (int, float)) or isinstance(headroom, bool) or not 0 < headroom <= 1:
        raise ConfigError(f"headroom must be in (0, 1], got {headroom!r}", source="plan")
    factors = factors or Factors.defaults(catalog)
    kinds = device_kinds(catalog, include_cpu=include_cpu, include_mig=include_mig, devices=devices)
    sized: dict[tuple[str, str], Sized] = {}
    for dem in demands:
        spec = model_spec(dem.config)
        params = count_spec(spec)
        reasons: dict[str, str] = {}
        for dk in kinds:
            s, why = _size(dem, spec, params, dk, factors, headroom)
            if s is not None and s.load.busy / headroom <= MAX_REPLICAS:
                sized[(dem.name, dk.key)] = s
            else:
                reasons[dk.key] = why or f"needs more than {MAX_REPLICAS} replicas"
        if not any(name == dem.name for name, _ in sized):
            raise _infeasible(dem, reasons, kinds, catalog, spec, params, factors)
    loads = {k: v.load for k, v in sized.items()}
    targets = {d.name: Target(d.ttft_ms, d.tpot_ms) for d in demands}
    pack_kinds = [Kind(k.key, k.price_per_hour, k.view.memory_bytes, _reserve(k, factors)) for k in kinds]
    sol: Solution = solve([d.name for d in demands], pack_kinds, loads, targets, headroom, solver)
    by_key = {k.key: k for k in kinds}
    by_name = {d.name: d for d in demands}
    groups = []
    for n, pg in enumerate(sol.groups):
        dk = by_key[pg.kind]
        members = [sized[(m, dk.key)] for m in pg.members]
        ttft_sum = sum(s.ttft_ms for s in members)
        tpot_sum = sum(s.tpot_ms for s in members)
        placements = []
        for m, s in zip(pg.members, members):
            d = by_name[m]
            placements.append(Placement(
                name=m, tasks=list(d.tasks), model=d.model, precision=s.precision, batch=s.batch,
                weights_bytes=s.weights_bytes, kv_bytes=s.kv_bytes, activation_bytes=s.activation_bytes,
                busy_fraction=s.load.busy, busy_per_replica=s.load.busy / pg.replicas,
                throughput_tokens_per_s=d.throughput_tokens_per_s, ttft_ms=s.ttft_ms, tpot_ms=s.tpot_ms,
                ttft_shared_ms=ttft_sum, tpot_shared_ms=tpot_sum, slo_ttft_ms=d.ttft_ms, slo_tpot_ms=d.tpot_ms,
                demand_source=d.demand_source, mode=s.mode))
        reserve = _reserve(dk, factors)
        used = sum(p.memory_bytes for p in placements) + reserve
        resource, rcount, selector, requests = _resources(dk, used)
        groups.append(Group(
            name=f"g{n}-{_slug(dk.key)}", device_kind=dk.kind, device=dk.device.name, label=dk.label, count=dk.count,
            mig=dk.mig, resource_name=resource, resource_count=rcount, node_selector=selector, requests=requests,
            replicas=pg.replicas, min_replicas=0, max_replicas=pg.replicas, price_per_hour=dk.price_per_hour,
            memory_capacity_bytes=dk.view.memory_bytes, reserve_bytes=reserve, headroom=headroom,
            placements=placements))
    notes = list(sol.notes)
    if any(g.device_kind == "mig" for g in groups):
        notes.append("MIG slices are counted and priced one by one; fitting them onto physical GPUs "
                     "(max instances per profile) is the cluster's MIG configuration")
    return FleetPlan(side=side, groups=groups, headroom=headroom, solver=sol.solver,
                     price_list=catalog.price_list.summary() if catalog.price_list else {"name": ""},
                     demands=list(demands), notes=notes)


def _reserve(dk: DeviceKind, factors: Factors) -> int:
    """One runtime reserve per process on each device (the estimator's per-GPU reserve)."""
    return int(factors.reserve_bytes + factors.reserve_fraction * dk.view.memory_bytes)


def plan_fleet(decisions: list[dict], price_list: str = DEFAULT_PRICE_LIST, headroom: float = DEFAULT_HEADROOM,
               *, solver: str = "auto", factors: Factors | None = None, catalog: Catalog | None = None,
               prices: dict[str, float] | None = None, include_cpu: bool = True, include_mig: bool = True,
               devices: Iterable[str] | None = None, baseline: bool = True) -> FleetPlan:
    """The fleet plan of ``decisions`` (records as ``size_gpu`` writes them).

    ``price_list``: a packaged list name or a path (``rightsizer/data/prices/``); ``prices``
    overrides some devices' prices ({name: USD/h}). ``headroom``: the busy fraction each device
    may reach. ``solver``: "auto" (exact ``milp`` up to 12 models, else ``ffd``), "milp", "ffd".
    ``devices``: restrict to these catalog devices. ``baseline``: also plan the one-big-model
    baseline fleet (``plan.baseline``; ``plan.baseline_error`` says why when it cannot be planned).
    Raises ``InsufficientMemory`` / ``NoFeasibleOption`` when a task fits or meets its SLO nowhere.
    """
    cat = catalog or (load_catalog(price_list=price_list) if price_list != DEFAULT_PRICE_LIST
                      else default_catalog(price_list))
    if prices:
        cat = cat.with_prices(prices)
    kwargs = dict(headroom=headroom, factors=factors, solver=solver, include_cpu=include_cpu,
                  include_mig=include_mig, devices=devices)
    plan = plan_demands(demands_from_decisions(decisions), cat, **kwargs)
    plan.quality = quality_of(decisions)
    if baseline:
        try:
            plan.baseline = plan_demands([baseline_demand(decisions)], cat, side="baseline", **kwargs)
        except (NoFeasibleOption, ConfigError) as exc:
            plan.baseline_error = str(exc)
    return plan


__all__ = ["FleetPlan", "Group", "Placement", "Demand", "DeviceKind", "plan_fleet", "plan_demands", "quality_of",
           "load_decisions", "demands_from_decisions", "baseline_demand", "device_kinds", "DEFAULT_HEADROOM"]
