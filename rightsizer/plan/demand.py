"""What the fleet plan places: one :class:`Demand` per task, read from the decision records.

Input: the decision records (:class:`rightsizer.records.DecisionRecord`, or their JSON as
``size_gpu`` writes it): per task the chosen model (its config, precision), the workload (prompt and output tokens, the
concurrency ``batch``) and the SLO (TTFT, TPOT, throughput). The baseline demand is the
largest candidate (bf16) as one model carrying every task's traffic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

from rightsizer.schema.check import is_number
from rightsizer.errors import ConfigError
from rightsizer.layout import RunLayout, find_decisions, latest_run
from rightsizer.records import (DECISIONS_SCHEMA_VERSION, DecisionRecord, DecisionSLO, DecisionWorkload, Side,
                                as_record, check_schema_version)


@dataclass
class CascadeDemand:
    """A task served as a cascade (the decision record's ``cascade``, chosen): the small model
    answers every request first, the demand's own model the deferred share."""

    model: str  # the small model
    config: Any
    precision: str
    deferral_rate: float
    threshold: float

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "precision": self.precision, "deferral_rate": self.deferral_rate,
                "threshold": self.threshold}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> CascadeDemand:
        return cls(**{k: need(data, k, where) for k in ("model", "precision", "deferral_rate", "threshold")},
                   config=None)


@dataclass
class Demand:
    """One model to place: what it is, what it must carry, and its targets.

    ``cascade``: the task is served as a cascade; ``model`` then carries only the deferred
    share of ``throughput_tokens_per_s`` (the task's whole traffic), the small model all of it."""

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
    cascade: CascadeDemand | None = None
    lengths: dict[str, Any] | None = None  # the record's length histogram (sizing.traffic.Lengths.to_dict)
    # a part of a task's traffic split by prompt length (``split_by_prompt``): the prompt tokens
    # [low, high] of the requests it serves; None: all of them
    prompt_range: tuple[int, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "tasks": list(self.tasks), "model": self.model, "precision": self.precision,
               "prompt_tokens": self.prompt_tokens, "output_tokens": self.output_tokens, "batch": self.batch,
               "slo": {"ttft_ms": self.ttft_ms, "tpot_ms": self.tpot_ms},
               "throughput_tokens_per_s": self.throughput_tokens_per_s, "demand_source": self.demand_source}
        if self.cascade is not None:
            out["cascade"] = self.cascade.to_dict()
        if self.lengths is not None:
            out["lengths"] = self.lengths
        if self.prompt_range is not None:
            out["prompt_range"] = list(self.prompt_range)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "demand") -> Demand:
        """A demand from its JSON (:meth:`to_dict`); ``config`` is not in it (None). KeyError
        naming ``where`` and the field when one is missing."""
        slo = need(data, "slo", where)
        return cls(**{k: need(data, k, where) for k in ("name", "tasks", "model", "precision", "prompt_tokens",
                                                         "output_tokens", "batch", "throughput_tokens_per_s",
                                                         "demand_source")},
                   config=None, ttft_ms=need(slo, "ttft_ms", f"{where}.slo"), tpot_ms=need(slo, "tpot_ms", f"{where}.slo"),
                   cascade=CascadeDemand.from_dict(data["cascade"], f"{where}.cascade") if data.get("cascade") else None,
                   lengths=data.get("lengths"),
                   prompt_range=tuple(data["prompt_range"]) if data.get("prompt_range") else None)


def need(data: Mapping[str, Any], key: str, where: str) -> Any:
    """``data[key]``; a KeyError naming ``where.key`` when it is missing (the plan's readers
    turn it into a ConfigError naming the file)."""
    if not isinstance(data, Mapping):
        raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}")
    if key not in data:
        raise KeyError(f"{where}.{key}")
    return data[key]


Decision = DecisionRecord | Mapping[str, Any]  # a record, or its JSON (DecisionRecord.from_dict reads it)


def load_decisions(path: str | Path) -> list[DecisionRecord]:
    """Decision records from a path: an artifact root (``<root>/rightsizer/<task>/size_gpu/decision.json``),
    the report's ``decisions.json`` (``{"records": [...]}``), one record, a list of records, or a
    folder of record files. Sorted by task."""
    p = Path(path)
    if p.is_dir():
        p = latest_run(p)  # a folder of runs (<run id>/): the latest one
        found = find_decisions(p)
        if found:
            return _sorted([DecisionRecord.from_dict(_read(f), str(f)) for f in found.values()])
        report = RunLayout(p).decisions_file()
        if report.is_file():
            return load_decisions(report)
        files = sorted(p.glob("*.json")) or sorted(p.glob("*/decision.json"))
        if not files:
            raise ConfigError(f"no decision records under {p} (looked for rightsizer/<task>/size_gpu/decision.json, "
                              "rightsizer/report/decisions.json and *.json)", source="decisions")
        records: list[DecisionRecord] = []
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


def _as_records(data: Any, path: Path) -> list[DecisionRecord]:
    if isinstance(data, dict) and isinstance(data.get("records"), list):
        check_schema_version(data, DECISIONS_SCHEMA_VERSION, "decisions", str(path))
        data = data["records"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not all(isinstance(r, dict) and "task" in r and "chosen" in r for r in data):
        raise ConfigError("not a decision record (needs 'task' and 'chosen') nor a list of them", source=str(path))
    return [DecisionRecord.from_dict(r, str(path)) for r in data]


def _sorted(records: list[DecisionRecord]) -> list[DecisionRecord]:
    return sorted(records, key=lambda r: str(r.task))


def _part(part: Any, name: str, where: str) -> Any:
    """``part.<name>`` of a record (its workload or SLO); KeyError naming ``where.name`` when absent."""
    value = None if part is None else getattr(part, name)
    if value is None:
        raise KeyError(f"{where}.{name}")
    return value


def _required(slo: DecisionSLO | None, batch: int) -> tuple[float, str]:
    target = float((slo.throughput_tokens_per_s if slo else None) or 0)
    if target > 0:
        return target, "slo.throughput_tokens_per_s"
    # no throughput target: the workload's concurrency, every sequence decoding at the TPOT target
    tpot = float(_part(slo, "tpot_ms", "slo"))
    return batch * 1000.0 / tpot, "workload.batch x 1000 / slo.tpot_ms (no throughput target)"


def _config_of(side: Side, task: str, which: str) -> Any:
    if side.config:
        return side.config
    if not side.model:
        raise ConfigError(f"decision of task {task!r}: {which} has neither 'config' nor 'model'", source="decisions")
    return side.model  # a config path, model folder or hub id the sizing engine resolves


def demands_from_decisions(decisions: Iterable[Decision]) -> list[Demand]:
    """One :class:`Demand` per task: its chosen model, workload and SLO. Every record that
    cannot be read or lacks what the plan needs is named in one ConfigError."""
    out = []
    problems = []
    for d in decisions:
        try:
            rec = as_record(d)
        except ConfigError as exc:
            problems.extend(exc.problems)
            continue
        task = str(rec.task)
        try:
            c, wl, slo = rec.chosen, rec.workload, rec.slo
            batch = int(_part(wl, "batch", "workload"))
            req, src = _required(slo, batch)
            out.append(Demand(name=task, tasks=[task], model=str(task if c.model is None else c.model),
                              config=_config_of(c, task, "chosen"), precision=str(c.precision or "bf16"),
                              prompt_tokens=int(_part(wl, "prompt_tokens", "workload")),
                              output_tokens=int(_part(wl, "output_tokens", "workload")), batch=batch,
                              ttft_ms=float(_part(slo, "ttft_ms", "slo")), tpot_ms=float(_part(slo, "tpot_ms", "slo")),
                              throughput_tokens_per_s=req, demand_source=src, cascade=_cascade_of(rec),
                              lengths=wl.lengths))
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


def _cascade_of(rec: DecisionRecord) -> CascadeDemand | None:
    """The record's cascade when the sizing step chose it (``size_gpu.price_cascade``)."""
    pair = rec.cascade_pair()
    if pair is None or not rec.cascade.get("chosen"):
        return None
    small = rec.cascade["small_side"]
    return CascadeDemand(model=str(pair["small"]), config=small.get("config") or pair["small"],
                         precision=str(small.get("precision") or "bf16"),
                         deferral_rate=float(pair["deferral_rate"]), threshold=float(pair["threshold"]))


def split_by_prompt(dem: Demand, cut: int) -> tuple[Demand, Demand] | None:
    """``dem``'s traffic in two parts by prompt length (Mélange: the short requests may be served
    cheaper on another device than the long ones): requests with prompts of at most ``cut``
    tokens and the rest, each with its share of the output tokens/s and of the concurrency, sized
    at its own mean shape; None when one part would be empty (or the demand has no lengths)."""
    if not dem.lengths or dem.cascade is not None:
        return None
    rows = [(int(p), int(o), int(c)) for p, o, c in dem.lengths["histogram"]]
    parts = ([r for r in rows if r[0] <= cut], [r for r in rows if r[0] > cut])
    if not all(parts):
        return None
    work = sum(o * c for _, o, c in rows)
    requests = sum(c for _, _, c in rows)
    out = []
    for part, rng, tag in ((parts[0], (min(r[0] for r in parts[0]), cut), f"<={cut}"),
                           (parts[1], (cut + 1, max(r[0] for r in parts[1])), f">{cut}")):
        n = sum(c for _, _, c in part)
        share = sum(o * c for _, o, c in part) / work
        out.append(Demand(
            name=f"{dem.name}@prompt{tag}", tasks=list(dem.tasks), model=dem.model, config=dem.config,
            precision=dem.precision, prompt_tokens=max(1, round(sum(p * c for p, _, c in part) / n)),
            output_tokens=max(1, round(sum(o * c for _, o, c in part) / n)),
            batch=max(1, round(dem.batch * n / requests)), ttft_ms=dem.ttft_ms, tpot_ms=dem.tpot_ms,
            throughput_tokens_per_s=dem.throughput_tokens_per_s * share,
            demand_source=f"{share:.0%} of {dem.name}'s output tokens ({dem.demand_source}): prompts of "
                          f"{rng[0]}-{rng[1]} tokens",
            lengths={"histogram": [list(r) for r in part], "source": f"{dem.name} prompts {tag}"},
            prompt_range=rng))
    return out[0], out[1]


def baseline_demand(decisions: list[Decision]) -> Demand:
    """The one-big-model baseline: the largest baseline candidate (by parameters), bf16, carrying
    every task's traffic: the tasks' throughputs and concurrencies add up, the longest prompt
    and output and the tightest TTFT and TPOT hold for all."""
    recs = [as_record(d) for d in decisions]
    r0, big = max(((r, r.baseline or Side()) for r in recs), key=lambda x: float(x[1].params or 0))
    wls = [r.workload or DecisionWorkload() for r in recs]
    slos = [r.slo or DecisionSLO() for r in recs]
    reqs = [_required(slo, int(_part(wl, "batch", "workload"))) for wl, slo in zip(wls, slos)]
    return Demand(
        name="baseline", tasks=[str(r.task) for r in recs], model=str("baseline" if big.model is None else big.model),
        config=_config_of(big, str(r0.task), "baseline"), precision="bf16",
        prompt_tokens=max(int(_part(wl, "prompt_tokens", "workload")) for wl in wls),
        output_tokens=max(int(_part(wl, "output_tokens", "workload")) for wl in wls),
        batch=sum(int(_part(wl, "batch", "workload")) for wl in wls),
        ttft_ms=min(float(_part(slo, "ttft_ms", "slo")) for slo in slos),
        tpot_ms=min(float(_part(slo, "tpot_ms", "slo")) for slo in slos),
        throughput_tokens_per_s=sum(r for r, _ in reqs),
        demand_source="sum over tasks of " + "; ".join(sorted({s for _, s in reqs})))


def quality_of(decisions: Iterable[Decision]) -> dict[str, dict[str, Any]]:
    """Per task, the chosen and the baseline model's quality against the task's bar, as the
    decision records give them; ``measured`` is false (``status`` "not measured") where a
    record has no score (an app spec's planned models: ``rightsizer.plan.app``)."""
    out = {}
    for d in decisions:
        rec = as_record(d)
        chosen = rec.chosen.quality
        base = rec.baseline.quality if rec.baseline else None
        measured = _score(chosen)
        out[str(rec.task)] = {
            "metric": rec.metric, "threshold": rec.threshold, "chosen": chosen if measured else None,
            "baseline": base if _score(base) else None,
            "measured": measured, "status": "measured" if measured else "not measured"}
    return out


def _score(value: Any) -> bool:
    return is_number(value, finite=True)


__all__ = ["CascadeDemand", "Demand", "Decision", "load_decisions", "demands_from_decisions", "baseline_demand",
           "quality_of", "split_by_prompt"]
