"""The fleet plan: pack every task's chosen model onto the cheapest set of devices.

Each demand (:mod:`rightsizer.plan.demand`) is sized alone on every device kind
(:mod:`rightsizer.plan.devices`); :mod:`rightsizer.plan.pack` then packs the models into
groups. The baseline fleet is planned the same way: the largest candidate (bf16) as one
model carrying every task's traffic.

No MLRun here: a pipeline step calls ``plan_fleet(load_decisions(path))``.
"""

from __future__ import annotations

import math
import re
from dataclasses import replace
from typing import Iterable

from rightsizer.errors import ConfigError, InsufficientMemory, NoFeasibleOption
from rightsizer.plan.demand import (Decision, Demand, baseline_demand, demands_from_decisions, quality_of,
                                    split_by_prompt)
from rightsizer.plan.devices import (GIB, DeviceKind, Sized, device_kinds, reserve_bytes, resources, size_on,
                                    with_front)
from rightsizer.plan.fleet import FleetPlan, Group, Placement
from rightsizer.plan.pack import DEFAULT_HEADROOM, MAX_REPLICAS, Kind, Solution, Target, solve
from rightsizer.records import as_record
from rightsizer.sizing import Factors, Workload, default_catalog, estimate, load_catalog
from rightsizer.sizing.catalog import Catalog
from rightsizer.sizing.estimate import held_rate
from rightsizer.sizing.traffic import Lengths
from rightsizer.sizing.params import ModelSpec, ParamCount, count_spec, model_spec
from rightsizer.sizing.prices import DEFAULT_PRICE_LIST
from rightsizer.sizing.recommend import precision_for

HOLDS_ITERATIONS = 5  # bisection steps after doubling: within 2 ** (1/32), about 2 %
SPLIT_SHARES = (0.5, 0.75, 0.9)  # where a task's traffic may be cut by prompt length: these shares of its requests
MIN_SPLIT_SAVING = 0.05  # a split is tried in the fleet when its parts cost this much less apart than on one kind


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


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
    fronts: dict[tuple[str, str], Sized] = {}  # a cascade's small model, answering first
    for dem in demands:
        spec = model_spec(dem.config)
        params = count_spec(spec)
        reasons: dict[str, str] = {}
        for dk in kinds:
            if dem.cascade is None:
                s, why = size_on(dem, spec, params, dk, factors, headroom)
            else:
                s, why = _size_cascade(dem, spec, params, dk, factors, headroom)
                if s is not None:
                    s, fronts[(dem.name, dk.key)] = s
            if s is not None and s.load.busy / headroom <= MAX_REPLICAS:
                sized[(dem.name, dk.key)] = s
            else:
                reasons[dk.key] = why or f"needs more than {MAX_REPLICAS} replicas"
        if not any(name == dem.name for name, _ in sized):
            raise _infeasible(dem, reasons, kinds, catalog, spec, params, factors)
    loads = {k: v.load for k, v in sized.items()}
    targets = {d.name: Target(d.ttft_ms, d.tpot_ms) for d in demands}
    pack_kinds = [Kind(k.key, k.price_per_hour, k.view.memory_bytes, reserve_bytes(k, factors)) for k in kinds]
    sol: Solution = solve([d.name for d in demands], pack_kinds, loads, targets, headroom, solver)
    by_key = {k.key: k for k in kinds}
    by_name = {d.name: d for d in demands}
    groups = []
    raised = []
    for n, pg in enumerate(sol.groups):
        dk = by_key[pg.kind]
        members = [sized[(m, dk.key)] for m in pg.members]
        ttft_sum = sum(s.ttft_ms for s in members)
        tpot_sum = sum(s.tpot_ms for s in members)
        held = holds([(by_name[m], s, fronts.get((m, dk.key))) for m, s in zip(pg.members, members)], pg.replicas)
        replicas, held = hold_planned(held, pg.replicas)
        if replicas != pg.replicas:
            raised.append(f"g{n} ({dk.label}): {pg.replicas} -> {replicas} replicas to hold its planned traffic "
                          "within the p95 targets (requests arriving at random)")
        placements = []
        for m, s in zip(pg.members, members):
            d = by_name[m]
            placements.append(Placement(
                name=m, tasks=list(d.tasks), model=d.model, precision=s.precision, batch=s.batch,
                weights_bytes=s.weights_bytes, kv_bytes=s.kv_bytes, activation_bytes=s.activation_bytes,
                busy_fraction=s.load.busy, busy_per_replica=s.load.busy / replicas,
                throughput_tokens_per_s=d.throughput_tokens_per_s, ttft_ms=s.ttft_ms, tpot_ms=s.tpot_ms,
                ttft_shared_ms=ttft_sum, tpot_shared_ms=tpot_sum, slo_ttft_ms=d.ttft_ms, slo_tpot_ms=d.tpot_ms,
                demand_source=d.demand_source, mode=s.mode,
                cascade=_front_of(d, fronts.get((m, dk.key)))))
        reserve = reserve_bytes(dk, factors)
        used = sum(p.memory_bytes for p in placements) + reserve
        resource, rcount, selector, requests = resources(dk, used)
        groups.append(Group(
            name=f"g{n}-{_slug(dk.key)}", device_kind=dk.kind, device=dk.device.name, label=dk.label, count=dk.count,
            mig=dk.mig, resource_name=resource, resource_count=rcount, node_selector=selector, requests=requests,
            replicas=replicas, min_replicas=0, max_replicas=replicas, price_per_hour=dk.price_per_hour,
            memory_capacity_bytes=dk.view.memory_bytes, reserve_bytes=reserve, headroom=headroom,
            placements=placements, holds=held))
    notes = list(sol.notes)
    if raised:
        notes.append("packed on the closed loop, then " + "; ".join(raised))
    if any(g.device_kind == "mig" for g in groups):
        notes.append("MIG slices are counted and priced one by one; fitting them onto physical GPUs "
                     "(max instances per profile) is the cluster's MIG configuration")
    return FleetPlan(side=side, groups=groups, headroom=headroom, solver=sol.solver,
                     price_list=catalog.price_list.summary() if catalog.price_list else {"name": ""},
                     demands=list(demands), notes=notes)


def _member_rate(d: Demand, s: Sized, front: Sized | None) -> tuple[float, float, str]:
    """(planned requests/s, requests/s one device holds within the member's p95 targets alone,
    how): simulated with its lengths (``sizing.estimate.tail``). A cascade holds what its
    small model holds at the whole rate and its big one at the deferred share, the lesser."""
    lengths = Lengths.from_dict(d.lengths, f"{d.name}.lengths") if d.lengths else None
    out_mean = lengths.mean(1) if lengths else d.output_tokens
    planned = d.throughput_tokens_per_s / out_mean

    def alone(sized: Sized, share: float) -> float:
        est = sized.estimate
        if est is None or est.step_model is None or planned <= 0:
            return 0.0
        start = max(planned * share, 1e-3)
        return held_rate(est, d.ttft_ms, d.tpot_ms, lengths, start=start, iterations=HOLDS_ITERATIONS) / share
    if front is None or d.cascade is None:
        return planned, alone(s, 1.0), "simulated alone"
    return planned, min(alone(front, 1.0), alone(s, d.cascade.deferral_rate)), \
        "cascade: the lesser of its small model at the whole rate and its big one at the deferred share"


def holds(members: list[tuple[Demand, Sized, Sized | None]], replicas: int) -> dict | None:
    """The request rate a group holds within every member's p95 TTFT and TPOT, arrivals at
    random: each member alone on one device holds r_i requests/s (``max_rate``); sharing the
    device in the planned mix, member i takes (its rate / r_i) of it, so the group holds its
    planned mix scaled by 1 / sum_i(planned_i / r_i), times its replicas. Sharing by time
    slices is an approximation (the members' steps interleave rather than split evenly)."""
    rows, need = [], 0.0
    for d, s, front in members:
        planned, alone, how = _member_rate(d, s, front)
        if planned <= 0:
            continue
        if alone <= 0:
            return {"planned_request_rate": None, "request_rate": 0.0, "scale": 0.0, "members": [],
                    "note": f"{d.name} misses its p95 targets at any rate on this device, requests arriving at random"}
        need += planned / replicas / alone
        rows.append({"name": d.name, "planned_request_rate": planned, "alone_request_rate_per_device": alone,
                     "how": how})
    if not rows:
        return None
    scale = 1 / need
    planned_total = sum(r["planned_request_rate"] for r in rows)
    return {"planned_request_rate": planned_total, "request_rate": planned_total * scale, "scale": scale,
            "meets_planned": scale >= 1.0, "members": rows,
            "note": "requests/s the group holds within every member's p95 TTFT and TPOT (Poisson arrivals, the "
                    "members' length histograms), its replicas together, in the planned mix"}


def hold_planned(h: dict | None, replicas: int) -> tuple[int, dict | None]:
    """The replicas a group needs to hold its planned traffic within the p95 targets (``holds``:
    what it holds grows with its replicas, which split the traffic), at least ``replicas`` and at
    most ``MAX_REPLICAS``, and ``holds`` at that count."""
    if not h or not h.get("planned_request_rate") or h.get("meets_planned") or not h.get("scale"):
        return replicas, h
    more = min(MAX_REPLICAS, max(replicas, math.ceil(replicas / h["scale"] - 1e-9)))
    k = more / replicas
    return more, {**h, "scale": h["scale"] * k, "request_rate": h["request_rate"] * k,
                  "meets_planned": h["scale"] * k >= 1.0, "raised_from_replicas": replicas}


def _size_cascade(dem: Demand, spec: ModelSpec, params: ParamCount, dk: DeviceKind, factors: Factors,
                  headroom: float) -> tuple[tuple[Sized, Sized] | None, str]:
    """A cascade demand on ``dk``: the big model at the deferred share and the small one at the
    whole traffic, as one load (``with_front``), and the small one's own sizing."""
    c = dem.cascade
    big, why = size_on(replace(dem, throughput_tokens_per_s=dem.throughput_tokens_per_s * c.deferral_rate),
                       spec, params, dk, factors, headroom)
    if big is None:
        return None, why
    small_spec = model_spec(c.config)
    small, why = size_on(replace(dem, model=c.model, config=c.config, precision=c.precision, cascade=None),
                         small_spec, count_spec(small_spec), dk, factors, headroom)
    if small is None:
        return None, f"cascade's small model {c.model}: {why}"
    return (with_front(big, small), small), ""


def _front_of(d: Demand, small: Sized | None) -> dict | None:
    """A placement's ``cascade`` section: the small model's share of the group."""
    if d.cascade is None or small is None:
        return None
    return {"model": d.cascade.model, "precision": small.precision, "batch": small.batch,
            "deferral_rate": d.cascade.deferral_rate, "threshold": d.cascade.threshold,
            "weights_bytes": small.weights_bytes, "kv_bytes": small.kv_bytes,
            "activation_bytes": small.activation_bytes, "busy_fraction": small.load.busy,
            "ttft_ms": small.ttft_ms, "tpot_ms": small.tpot_ms}


def _costs(dem: Demand, spec: ModelSpec, params: ParamCount, kinds: list[DeviceKind], factors: Factors,
           headroom: float) -> dict[str, float]:
    """Per device kind ``dem`` fits and meets its targets on: the $/hour of the fractional
    devices it keeps busy there (the packer's own cost, before packing into whole devices)."""
    out = {}
    for dk in kinds:
        s, _ = size_on(dem, spec, params, dk, factors, headroom)
        if s is not None and s.load.busy / headroom <= MAX_REPLICAS:
            out[dk.key] = dk.price_per_hour * s.load.busy / headroom
    return out


def split_for_devices(dem: Demand, kinds: list[DeviceKind], factors: Factors,
                      headroom: float) -> tuple[tuple[Demand, Demand], dict] | None:
    """Mélange's point for one task: its short-prompt requests on one device type and its long
    ones on another, when that costs less than both on the one best type. Cuts at
    ``SPLIT_SHARES`` of its requests (by prompt length, from its length histogram); each part is
    sized on every device kind at its own mean shape; both sides of the comparison add the two
    parts' fractional costs (so the saving is the devices' fit to the request sizes, not a
    different workload). The best cut whose parts prefer different kinds and save at least
    ``MIN_SPLIT_SAVING``, with its figures; None otherwise (no histogram, one prompt length, a
    cascade, or too little saving)."""
    if not dem.lengths or dem.cascade is not None:
        return None
    rows = sorted((int(p), int(c)) for p, _, c in dem.lengths["histogram"])
    total = sum(c for _, c in rows)
    cuts = set()
    for share in SPLIT_SHARES:  # the shortest prompt length with this share of the requests at or below it
        seen = 0
        for p, c in rows:
            seen += c
            if seen / total >= share:
                cuts.add(p)
                break
    spec = model_spec(dem.config)
    params = count_spec(spec)
    best = None
    for cut in sorted(cuts):
        parts = split_by_prompt(dem, cut)
        if parts is None:
            continue
        short, long_ = (_costs(p, spec, params, kinds, factors, headroom) for p in parts)
        together = {k: short[k] + long_[k] for k in short.keys() & long_.keys()}
        if not short or not long_:
            continue
        ks, kl = min(short, key=short.get), min(long_, key=long_.get)
        split = short[ks] + long_[kl]
        one = min(together, key=together.get) if together else None
        one_cost = together[one] if one else math.inf
        if ks == kl or split > one_cost * (1 - MIN_SPLIT_SAVING):
            continue
        if best is None or split < best[1]["split_cost_per_hour"]:
            best = (parts, {"task": dem.name, "cut_prompt_tokens": cut, "short_on": ks, "long_on": kl,
                            "split_cost_per_hour": split, "one_kind": one, "one_kind_cost_per_hour": one_cost,
                            "saving": 1 - split / one_cost if math.isfinite(one_cost) else None})
    return best


def plan_mixed(demands: list[Demand], catalog: Catalog, chosen: FleetPlan, **kwargs) -> tuple[FleetPlan | None, str]:
    """The fleet with every task that pays for it split by prompt length across device types
    (``split_for_devices``), packed and held to its planned traffic like ``chosen``; kept when it
    costs less than ``chosen``. (The mixed fleet or None, what was found.)"""
    factors = kwargs.get("factors") or Factors.defaults(catalog)
    headroom = kwargs.get("headroom", DEFAULT_HEADROOM)
    kinds = device_kinds(catalog, include_cpu=kwargs.get("include_cpu", True),
                         include_mig=kwargs.get("include_mig", True), devices=kwargs.get("devices"))
    split, why = [], []
    for d in demands:
        found = split_for_devices(d, kinds, factors, headroom)
        if found is None:
            split.append(d)
            continue
        parts, f = found
        split.extend(parts)
        one = f"{f['one_kind']} alone ${f['one_kind_cost_per_hour']:.3f}/h" if f["one_kind"] else "no one kind holds both"
        why.append(f"{f['task']}: prompts <= {f['cut_prompt_tokens']} tokens on {f['short_on']}, longer on "
                   f"{f['long_on']} (${f['split_cost_per_hour']:.3f}/h of busy devices against {one})")
    if not why:
        return None, ("no task's traffic is cheaper split by prompt length across device types (a task without a "
                      "length histogram is not split)")
    try:
        mixed = plan_demands(split, catalog, side="mixed", **kwargs)
    except (NoFeasibleOption, ConfigError) as exc:
        return None, f"the split fleet cannot be planned ({exc}); " + "; ".join(why)
    short = [f"{fleet.side} {g.name}" for fleet in (chosen, mixed) for g in fleet.groups
             if g.holds and g.holds.get("planned_request_rate") and not g.holds.get("meets_planned")]
    held = ("both holding their planned traffic within the p95 targets" if not short else
            f"not every group holding its planned traffic within the p95 targets ({', '.join(short)})")
    verdict = (f"${mixed.cost_per_hour:.3f}/h against the fleet's ${chosen.cost_per_hour:.3f}/h, {held}; "
               + "; ".join(why))
    if mixed.cost_per_hour >= chosen.cost_per_hour:
        return None, "does not pay: " + verdict
    return mixed, "pays: " + verdict


def plan_fleet(decisions: list[Decision], price_list: str = DEFAULT_PRICE_LIST, headroom: float = DEFAULT_HEADROOM,
               *, solver: str = "auto", factors: Factors | None = None, catalog: Catalog | None = None,
               prices: dict[str, float] | None = None, include_cpu: bool = True, include_mig: bool = True,
               devices: Iterable[str] | None = None, baseline: bool = True, mixed_devices: bool = False) -> FleetPlan:
    """The fleet plan of ``decisions`` (:class:`~rightsizer.records.DecisionRecord`, or their
    JSON as ``size_gpu`` writes it).

    ``price_list``: a packaged list name or a path (``rightsizer/data/prices/``); ``prices``
    overrides some devices' prices ({name: USD/h}). ``headroom``: the busy fraction each device
    may reach. ``solver``: "auto" (exact ``milp`` up to 12 models, else ``ffd``), "milp", "ffd".
    ``devices``: restrict to these catalog devices. ``baseline``: also plan the one-big-model
    baseline fleet (``plan.baseline``; ``plan.baseline_error`` says why when it cannot be planned).
    ``mixed_devices``: also plan the fleet with tasks split by prompt length across device types
    where that costs less (``plan.mixed``, ``plan.mixed_note``; ``plan_mixed``).
    Raises ``InsufficientMemory`` / ``NoFeasibleOption`` when a task fits or meets its SLO nowhere.
    """
    cat = catalog or (load_catalog(price_list=price_list) if price_list != DEFAULT_PRICE_LIST
                      else default_catalog(price_list))
    if prices:
        cat = cat.with_prices(prices)
    kwargs = dict(headroom=headroom, factors=factors, solver=solver, include_cpu=include_cpu,
                  include_mig=include_mig, devices=devices)
    demands = demands_from_decisions(decisions)  # reads every record, names every problem
    records = [as_record(d) for d in decisions]
    plan = plan_demands(demands, cat, **kwargs)
    plan.quality = quality_of(records)
    if mixed_devices:
        plan.mixed, plan.mixed_note = plan_mixed(demands, cat, plan, **kwargs)
    if baseline:
        try:
            plan.baseline = plan_demands([baseline_demand(records)], cat, side="baseline", **kwargs)
        except (NoFeasibleOption, ConfigError) as exc:
            plan.baseline_error = str(exc)
    return plan


__all__ = ["plan_fleet", "plan_demands", "plan_mixed", "split_for_devices"]
