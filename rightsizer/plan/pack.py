"""Packing models into placement groups: the exact set-partition MILP and its greedy fallback.

Pure numbers, no sizing: each model has, per device kind where it can run alone, a
:class:`Load` (memory without the runtime reserve, busy fraction at its full traffic on one
device, TTFT and TPOT alone). A *group* is a set of models on one device kind, in one
process per device, with ``replicas`` identical devices that split every member's traffic
evenly. A group is feasible on a kind when

* memory: the members' memory plus ONE runtime reserve fits the device (per GPU under
  tensor parallelism);
* SLO while sharing: the members' steps interleave, so a step of one may wait for one step
  of every other member (the worst case, no priority): the sum of the members' TTFT must be
  within the tightest member TTFT target, and the sum of their TPOT within the tightest
  TPOT target;
* time: replicas = ceil(sum of busy fractions / headroom), so each device stays under the
  headroom; at most :data:`MAX_REPLICAS`.

Its cost is replicas x the kind's price. The cheapest fleet is a partition of the models
into groups of least total cost:

* ``milp`` (up to :data:`MAX_EXACT` models): every subset of models gets its cheapest
  feasible kind (vectorised with numpy), then ``scipy.optimize.milp`` picks the subsets that
  cover each model exactly once at least cost: the exact optimum of this model of sharing.
* ``ffd`` (more models, or on request): models by decreasing cost alone, each put into the
  existing group where it adds least cost (the first such; the group may move to a kind that
  holds the larger set), or into a new group of its own. Never cheaper than ``milp``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from rightsizer.errors import ConfigError

MAX_EXACT = 12  # models; 2^12 - 1 subsets
MAX_REPLICAS = 64
DEFAULT_HEADROOM = 0.8  # busy fraction a device may reach: queueing stays bounded and a burst has room
SOLVERS = ("auto", "milp", "ffd")


@dataclass(frozen=True)
class Kind:
    """One device kind a group can run on: price per device (per TP group), capacity, reserve."""

    key: str
    price_per_hour: float
    memory_bytes: int  # per GPU
    reserve_bytes: int  # one runtime reserve per process on each GPU


@dataclass(frozen=True)
class Load:
    """One model alone on one device kind."""

    memory_bytes: int  # weights + KV + activations, per GPU, without the reserve
    busy: float  # required throughput / the throughput it reaches there (one device, all traffic)
    ttft_ms: float
    tpot_ms: float


@dataclass(frozen=True)
class Target:
    """A model's SLO targets."""

    ttft_ms: float
    tpot_ms: float


@dataclass
class Packed:
    """One group of the solution: its members, kind, replicas and cost."""

    members: tuple[str, ...]
    kind: str
    replicas: int
    cost_per_hour: float
    busy: float  # sum of the members' busy fractions (one device, all traffic)
    memory_bytes: int  # members' memory + the reserve, per GPU


@dataclass
class Solution:
    groups: list[Packed]
    solver: str
    cost_per_hour: float
    notes: list[str] = field(default_factory=list)


def _replicas(busy: float, headroom: float) -> int:
    return max(1, math.ceil(busy / headroom - 1e-9))


def evaluate_group(members: Sequence[str], kind: Kind, loads: Mapping[tuple[str, str], Load],
                   targets: Mapping[str, Target], headroom: float) -> Packed | None:
    """The group of ``members`` on ``kind``, or None when it is not feasible there."""
    ls = [loads.get((m, kind.key)) for m in members]
    if any(x is None for x in ls):
        return None
    mem = sum(x.memory_bytes for x in ls) + kind.reserve_bytes
    if mem > kind.memory_bytes:
        return None
    if len(ls) > 1:
        if sum(x.ttft_ms for x in ls) > min(targets[m].ttft_ms for m in members):
            return None
        if sum(x.tpot_ms for x in ls) > min(targets[m].tpot_ms for m in members):
            return None
    busy = sum(x.busy for x in ls)
    reps = _replicas(busy, headroom)
    if reps > MAX_REPLICAS:
        return None
    return Packed(tuple(members), kind.key, reps, reps * kind.price_per_hour, busy, mem)


def best_group(members: Sequence[str], kinds: Sequence[Kind], loads, targets, headroom) -> Packed | None:
    """The cheapest feasible kind for ``members`` (ties: the first kind in ``kinds``)."""
    best = None
    for kind in kinds:
        g = evaluate_group(members, kind, loads, targets, headroom)
        if g is not None and (best is None or g.cost_per_hour < best.cost_per_hour - 1e-12):
            best = g
    return best


def solve(items: Sequence[str], kinds: Sequence[Kind], loads: Mapping[tuple[str, str], Load],
          targets: Mapping[str, Target], headroom: float = DEFAULT_HEADROOM, solver: str = "auto") -> Solution:
    """Partition ``items`` into groups of least total cost. Every item must run alone somewhere."""
    if solver not in SOLVERS:
        raise ConfigError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    if not 0 < headroom <= 1:
        raise ConfigError(f"headroom must be in (0, 1], got {headroom!r}")
    if len(set(items)) != len(items):
        raise ConfigError("model names in a fleet must be unique")
    alone = [i for i in items if best_group([i], kinds, loads, targets, headroom) is None]
    if alone:
        raise ConfigError(f"no device kind can carry {', '.join(alone)} alone (check before packing)")
    if solver == "ffd" or (solver == "auto" and len(items) > MAX_EXACT):
        sol = _ffd(items, kinds, loads, targets, headroom)
        if solver == "auto":
            sol.notes.append(f"{len(items)} models > {MAX_EXACT}: greedy first-fit-decreasing by cost (ffd), "
                             "not proven optimal")
        return sol
    if len(items) > MAX_EXACT + 4:
        raise ConfigError(f"the exact solver enumerates subsets: at most {MAX_EXACT + 4} models, got {len(items)}; "
                          "use solver='ffd'")
    return _milp(items, kinds, loads, targets, headroom)


# --------------------------------------------------------------------------- exact


def _subset_table(items, kinds, loads, targets, headroom):
    """Cheapest feasible kind of every non-empty subset, vectorised: (masks, kind index, replicas, cost)."""
    import numpy as np

    n, k = len(items), len(kinds)
    inf = np.inf
    mem = np.full((n, k), inf)
    busy = np.zeros((n, k))
    ttft = np.full((n, k), inf)
    tpot = np.full((n, k), inf)
    for a, item in enumerate(items):
        for b, kind in enumerate(kinds):
            load = loads.get((item, kind.key))
            if load is not None:
                mem[a, b], busy[a, b], ttft[a, b], tpot[a, b] = load.memory_bytes, load.busy, load.ttft_ms, load.tpot_ms
    t_ttft = np.array([targets[i].ttft_ms for i in items])
    t_tpot = np.array([targets[i].tpot_ms for i in items])
    masks = np.array(list(itertools.product((0, 1), repeat=n))[1:], dtype=bool)  # 2^n - 1 subsets
    S = masks.astype(float)
    with np.errstate(invalid="ignore"):
        runs = (masks[:, :, None] & ~np.isfinite(mem)[None, :, :]).any(axis=1)  # a member cannot run there
        mem_used = S @ np.where(np.isfinite(mem), mem, 0.0) + np.array([kd.reserve_bytes for kd in kinds])[None, :]
        cap = np.array([kd.memory_bytes for kd in kinds], dtype=float)[None, :]
        sum_ttft = S @ np.where(np.isfinite(ttft), ttft, 0.0)
        sum_tpot = S @ np.where(np.isfinite(tpot), tpot, 0.0)
        min_ttft = np.where(masks, t_ttft[None, :], inf).min(axis=1)[:, None]
        min_tpot = np.where(masks, t_tpot[None, :], inf).min(axis=1)[:, None]
        single = (S.sum(axis=1) == 1)[:, None]
        sum_busy = S @ busy
        reps = np.maximum(1, np.ceil(sum_busy / headroom - 1e-9))
        ok = (~runs) & (mem_used <= cap) & (single | ((sum_ttft <= min_ttft) & (sum_tpot <= min_tpot))) \
            & (reps <= MAX_REPLICAS)
        price = np.array([kd.price_per_hour for kd in kinds])[None, :]
        cost = np.where(ok, reps * price, inf)
    best = cost.argmin(axis=1)  # the first kind of least cost
    best_cost = cost[np.arange(len(masks)), best]
    keep = np.isfinite(best_cost)
    return masks[keep], best[keep], best_cost[keep]


def _milp(items, kinds, loads, targets, headroom) -> Solution:
    import numpy as np
    from scipy.optimize import Bounds, LinearConstraint, milp

    masks, kind_idx, costs = _subset_table(items, kinds, loads, targets, headroom)
    A = masks.T.astype(float)  # item x subset
    res = milp(c=costs, constraints=[LinearConstraint(A, lb=np.ones(len(items)), ub=np.ones(len(items)))],
               integrality=np.ones(len(costs)), bounds=Bounds(0, 1), options={"time_limit": 60})
    if res.x is None or res.status not in (0, 1):
        sol = _ffd(items, kinds, loads, targets, headroom)
        sol.notes.append(f"milp found no solution ({res.message}); greedy ffd used instead")
        return sol
    groups = []
    for j in np.flatnonzero(res.x > 0.5):
        members = [items[a] for a in np.flatnonzero(masks[j])]
        g = evaluate_group(members, kinds[int(kind_idx[j])], loads, targets, headroom)
        assert g is not None, "the subset table and evaluate_group disagree"
        groups.append(g)
    notes = [] if res.status == 0 else [f"milp stopped at its time limit: {res.message}"]
    return Solution(_ordered(groups, items), "milp", sum(g.cost_per_hour for g in groups), notes)


# --------------------------------------------------------------------------- greedy


def _ffd(items, kinds, loads, targets, headroom) -> Solution:
    solo = {i: best_group([i], kinds, loads, targets, headroom) for i in items}
    order = sorted(items, key=lambda i: (-solo[i].cost_per_hour, -solo[i].memory_bytes, items.index(i)))
    groups: list[Packed] = []
    for item in order:
        best_at, best_group_, best_added = None, None, solo[item].cost_per_hour
        for at, g in enumerate(groups):
            merged = best_group(list(g.members) + [item], kinds, loads, targets, headroom)
            if merged is None:
                continue
            added = merged.cost_per_hour - g.cost_per_hour
            if added < best_added - 1e-12 or (best_at is None and added <= best_added + 1e-12):
                best_at, best_group_, best_added = at, merged, added
        if best_at is None:
            groups.append(solo[item])
        else:
            groups[best_at] = best_group_
    return Solution(_ordered(groups, items), "ffd", sum(g.cost_per_hour for g in groups))


def _ordered(groups: list[Packed], items: Sequence[str]) -> list[Packed]:
    """Groups in a stable order: most expensive first, then by their first member's position."""
    pos = {i: n for n, i in enumerate(items)}
    for g in groups:
        g.members = tuple(sorted(g.members, key=pos.__getitem__))
    return sorted(groups, key=lambda g: (-g.cost_per_hour, pos[g.members[0]]))


__all__ = ["Kind", "Load", "Target", "Packed", "Solution", "solve", "evaluate_group", "best_group",
           "MAX_EXACT", "MAX_REPLICAS", "SOLVERS", "DEFAULT_HEADROOM"]
