"""What the fleet plan places: one :class:`Demand` per task, read from the decision records.

Input: the decision records ``size_gpu`` writes (``rightsizer.size_gpu.build_record``): per
task the chosen model (its config, precision), the workload (prompt and output tokens, the
concurrency ``batch``) and the SLO (TTFT, TPOT, throughput). The baseline demand is the
largest candidate (bf16) as one model carrying every task's traffic.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from rightsizer.errors import ConfigError
from rightsizer.layout import RunLayout, find_decisions, latest_run


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


__all__ = ["Demand", "load_decisions", "demands_from_decisions", "baseline_demand", "quality_of"]
