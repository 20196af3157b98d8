"""The fleet plan's types: placement groups of models on devices, the plan, its JSON (one
writer, ``FleetPlan.to_dict``, and one reader, ``FleetPlan.from_dict``) and the serving
function spec of each group.

:mod:`rightsizer.plan.solve` builds a :class:`FleetPlan` (``plan_fleet``); no MLRun here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from rightsizer.errors import ConfigError
from rightsizer.plan.demand import Demand, need
from rightsizer.records import PLAN_SCHEMA_VERSION, check_schema_version
from rightsizer.sizing.engines import serving_engine

_PLACEMENT_FIELDS = ("name", "tasks", "model", "precision", "batch", "busy_fraction", "busy_per_replica",
                     "throughput_tokens_per_s", "ttft_ms", "tpot_ms", "ttft_shared_ms", "tpot_shared_ms",
                     "demand_source")
_GROUP_FIELDS = ("name", "device_kind", "device", "label", "count", "mig", "resource_name", "resource_count",
                 "node_selector", "requests", "replicas", "min_replicas", "max_replicas", "price_per_hour",
                 "memory_capacity_bytes", "reserve_bytes", "headroom")


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
    # served as a cascade: the small model answering first, in the same process (its memory,
    # busy fraction and latency; plan.solve._front_of); the fields above are the big model's
    # at the deferred share, busy and latency the two together
    cascade: dict[str, Any] | None = None

    @property
    def memory_bytes(self) -> int:
        c = self.cascade or {}
        return (self.weights_bytes + self.kv_bytes + self.activation_bytes
                + sum(int(c.get(k, 0)) for k in ("weights_bytes", "kv_bytes", "activation_bytes")))

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
                "demand_source": self.demand_source, "sizing_mode": self.mode,
                **({"cascade": dict(self.cascade)} if self.cascade else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> Placement:
        """A placement from its JSON (:meth:`to_dict`); KeyError naming ``where`` and the field."""
        memory, slo = need(data, "memory", where), need(data, "slo", where)
        return cls(**{k: need(data, k, where) for k in _PLACEMENT_FIELDS},
                   **{k: need(memory, k, f"{where}.memory") for k in ("weights_bytes", "kv_bytes", "activation_bytes")},
                   slo_ttft_ms=need(slo, "ttft_ms", f"{where}.slo"), slo_tpot_ms=need(slo, "tpot_ms", f"{where}.slo"),
                   mode=need(data, "sizing_mode", where), cascade=data.get("cascade"))


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
    # the request rate it holds within every member's p95 targets, arrivals at random (solve.holds)
    holds: dict[str, Any] | None = None

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
                "models": [p.to_dict() for p in self.placements],
                **({"holds": dict(self.holds)} if self.holds else {})}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> Group:
        """A group from its JSON (:meth:`to_dict`); KeyError naming ``where`` and the field."""
        models = need(data, "models", where)
        return cls(**{k: need(data, k, where) for k in _GROUP_FIELDS},
                   placements=[Placement.from_dict(m, f"{where}.models[{i}]") for i, m in enumerate(models)],
                   holds=data.get("holds"))

    def function_spec(self) -> dict[str, Any]:
        """What the deployment of this group would be: one serving function."""
        limits = {self.resource_name: self.resource_count} if self.resource_name else {}
        return {"name": f"serving-{self.name}", "group": self.name, "device": self.label,
                "resources": {"limits": limits, "requests": dict(self.requests)},
                "node_selector": dict(self.node_selector), "min_replicas": self.min_replicas,
                "max_replicas": self.max_replicas,
                "models": [{"name": p.name, "tasks": list(p.tasks), "model": p.model, "precision": p.precision,
                            "batch": p.batch, **({"cascade": p.cascade["model"]} if p.cascade else {})}
                           for p in self.placements]}


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
    # the same demands with some tasks' traffic split by prompt length across device types
    # (Mélange; ``plan_fleet(..., mixed_devices=True)``): the fleet, and what it found
    mixed: "FleetPlan | None" = None
    mixed_note: str = ""
    mixed_deployed: bool = False  # the deploy step deploys the mixed fleet (project param deploy_mixed_devices)

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
                if d.prompt_range is not None:  # a part of its task's traffic: the entry point routes by length
                    m["prompt_range"] = list(d.prompt_range)
        return specs

    def placement_of(self, name: str) -> tuple[Group, Placement]:
        for g in self.groups:
            for p in g.placements:
                if p.name == name:
                    return g, p
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        """The plan's JSON (what the plan step logs as ``fleet_plan``, :meth:`from_dict` reads)."""
        out = {"schema_version": PLAN_SCHEMA_VERSION, "side": self.side, "solver": self.solver, "headroom": self.headroom,
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
            if self.mixed is not None or self.mixed_note:
                out["mixed_devices"] = self.mixed_devices()
        return out

    def mixed_devices(self) -> dict[str, Any]:
        """The mixed-device alternative beside this fleet: its plan, the tasks it splits by
        prompt length (each part's device and share), its cost against this fleet's."""
        m = self.mixed
        if m is None:
            return {"plan": None, "note": self.mixed_note}
        splits: dict[str, list[dict[str, Any]]] = {}
        for g in m.groups:
            for p in g.placements:
                d = next(x for x in m.demands if x.name == p.name)
                if d.prompt_range is not None:
                    splits.setdefault(d.tasks[0], []).append(
                        {"part": p.name, "prompt_tokens": list(d.prompt_range), "device": g.label, "group": g.name,
                         "throughput_tokens_per_s": d.throughput_tokens_per_s})
        return {"plan": m.to_dict(), "note": self.mixed_note, "splits": splits,
                "cost_per_hour": {"mixed": m.cost_per_hour, "chosen": self.cost_per_hour},
                "saving": 1 - m.cost_per_hour / self.cost_per_hour if self.cost_per_hour > 0 else None,
                "deployed": self.mixed_deployed,
                "why_not_deployed": "" if self.mixed_deployed else "the project param deploy_mixed_devices is false"}

    @classmethod
    def from_dict(cls, data: Any, source: str = "fleet plan") -> FleetPlan:
        """The plan in ``data``, its JSON (:meth:`to_dict`, as any version up to this one wrote
        it, with or without the plan step's ``function_specs`` and ``unsized_tasks``): the
        totals, comparison and function specs follow from it again. The demands' model
        configs are not in the JSON (``config`` None). A ConfigError naming ``source`` and the
        field when one is missing, or when the plan is of a newer version."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"not a fleet plan: expected a mapping, got {type(data).__name__}", source=source)
        check_schema_version(data, PLAN_SCHEMA_VERSION, "fleet plan", source)
        try:
            base = data.get("baseline")
            return cls(side=need(data, "side", "plan"), headroom=need(data, "headroom", "plan"),
                       solver=need(data, "solver", "plan"), price_list=dict(need(data, "price_list", "plan")),
                       groups=[Group.from_dict(g, f"plan.groups[{i}]")
                               for i, g in enumerate(need(data, "groups", "plan"))],
                       demands=[Demand.from_dict(d, f"plan.demands[{i}]")
                                for i, d in enumerate(need(data, "demands", "plan"))],
                       notes=list(data.get("notes") or []),
                       baseline=cls.from_dict(base, source) if base else None,
                       baseline_error=data.get("baseline_error") or "",
                       quality={k: dict(v) for k, v in (data.get("quality") or {}).items()},
                       mixed=cls.from_dict(mixed["plan"], source) if (mixed := data.get("mixed_devices") or {}).get("plan")
                       else None, mixed_note=str(mixed.get("note") or ""),
                       mixed_deployed=bool(mixed.get("deployed")))
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"fleet plan: missing or bad field {exc}", source=source) from None

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


def holds_line(h: Mapping[str, Any]) -> str:
    """One line: the request rate a group holds within its p95 targets against the planned one."""
    if not h.get("planned_request_rate"):
        return f"holds: {h.get('note', 'no planned rate')}"
    return (f"holds {h['request_rate']:,.2f} req/s within every member's p95 TTFT/TPOT (arrivals at random), "
            f"{h['scale']:.2f}x the planned {h['planned_request_rate']:,.2f} req/s"
            + ("" if h.get("meets_planned") else ": BELOW the planned traffic"))


def plan_json(plan: FleetPlan | Mapping[str, Any], source: str = "fleet plan") -> dict[str, Any]:
    """A fleet plan's JSON (:meth:`FleetPlan.to_dict`), from the plan or from JSON read back
    (through :meth:`FleetPlan.from_dict`: its version and fields checked), so the code that
    draws and tabulates a plan reads one form."""
    return (plan if isinstance(plan, FleetPlan) else FleetPlan.from_dict(plan, source)).to_dict()


__all__ = ["Placement", "Group", "FleetPlan", "plan_json"]
