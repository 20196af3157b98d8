"""The run's summary: the chosen deployment beside the one-big-model baseline per task and
in total, the chosen fleet beside the baseline fleet, and the plain-text table the demo and
the report step print."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rightsizer.display import finite, rounded
from rightsizer.plan.fleet import FleetPlan, plan_json
from rightsizer.records import DecisionRecord, as_record

SUMMARY_COLUMNS = ("task", "choice", "model", "params", "rung", "precision", "sized_for",
                   "sizing_mode", "metric", "quality", "threshold", "meets_bar", "recall_at_k",
                   "price_usd_per_hour", "cost_usd_per_1m_output_tokens",
                   "modelled_ttft_ms", "modelled_tpot_ms", "modelled_throughput_tokens_per_s",
                   "modelled_memory_gb", "weights_gb", "measured_on", "measured_tpot_p95_ms",
                   "aggregation")

# How the TOTAL row combines each column (also written into the row, column "aggregation").
TOTAL_RULES = {
    "params": "sum",
    "price_usd_per_hour": "sum (one deployment per task, not packed)",
    "cost_usd_per_1m_output_tokens": "mean weighted by each task's throughput target",
    "modelled_ttft_ms": "max", "modelled_tpot_ms": "max", "measured_tpot_p95_ms": "max",
    "modelled_throughput_tokens_per_s": "sum", "modelled_memory_gb": "sum", "weights_gb": "sum",
    "meets_bar": "tasks meeting their own bar",
    "cascade": "a chosen cascade counts for its task (both models' params and device prices, its cost and bar)",
}


def _task_weights(records: list[DecisionRecord], choice: str) -> list[float]:
    """Each task's share of the tokens: its throughput target when every task states one,
    else the throughput its deployment is sized for."""
    targets = [(r.slo.throughput_tokens_per_s if r.slo else None) or 0 for r in records]
    if all(t > 0 for t in targets):
        return [float(t) for t in targets]
    return [float(getattr(r, choice).throughput_tokens_per_s or 0) for r in records]


def _weighted(values: list[float | None], weights: list[float]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights) if finite(v)]
    if len(pairs) < len(values) or not sum(w for _, w in pairs):
        return None  # a task without a cost (unservable): no honest blend
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs)


def summary_rows(records: Sequence[DecisionRecord | Mapping[str, Any]], unsized: list[dict] = ()) -> list[dict]:
    """Chosen deployment beside the one-big-model baseline, per task and in total.

    Quality is measured (the evaluate step, on the eval split); price, cost, latency,
    throughput and memory are modelled by the sizing engine for the device in ``sized_for``
    (``sizing_mode``); ``measured_tpot_p95_ms`` is what the evaluate step measured on
    ``measured_on``. The TOTAL rows combine columns as :data:`TOTAL_RULES` says.

    ``unsized``: the tasks no candidate could size (``rightsizer.unsized.unsized_entry``), one
    row each (choice "unsized": the best rung the ladder found, ``meets_bar`` False); the
    chosen TOTAL counts them among the tasks that do not meet their bar.

    ``records``: :class:`~rightsizer.records.DecisionRecord` or their JSON.
    """
    records = [as_record(r) for r in records]
    rows = []
    for rec in records:
        for choice in ("chosen", "baseline"):
            d = getattr(rec, choice)
            here = d.measured_here or {}
            rows.append({"task": rec.task, "choice": choice, "model": d.model,
                         "params": d.params, "rung": d.rung, "precision": d.precision,
                         "sized_for": d.gpu, "sizing_mode": d.sizing_mode or "",
                         "metric": rec.metric or "", "quality": round(d.quality, 4),
                         "threshold": rec.threshold,
                         "meets_bar": bool(d.quality >= rec.threshold),
                         "recall_at_k": rounded(d.retrieval_recall_at_k, 3),
                         "price_usd_per_hour": rounded(d.price_per_hour, 4),
                         "cost_usd_per_1m_output_tokens": rounded(d.cost_per_1m_tokens, 4),
                         "modelled_ttft_ms": rounded(d.ttft_ms, 2),
                         "modelled_tpot_ms": rounded(d.tpot_ms, 3),
                         "modelled_throughput_tokens_per_s": rounded(d.throughput_tokens_per_s, 1),
                         "modelled_memory_gb": round(d.memory_bytes / 1e9, 3),
                         "weights_gb": round((d.weights_bytes or 0) / 1e9, 4),
                         "measured_on": here.get("device", ""),
                         "measured_tpot_p95_ms": rounded(here.get("tpot_p95_ms"), 3)})
    rows += [_unsized_row(u) for u in unsized]
    cascades = [row for row in (_cascade_row(rec) for rec in records) if row]
    served = {row["task"]: row for row in cascades if row["choice"] == "cascade"}  # chosen: what is deployed
    for choice in ("chosen", "baseline"):
        part = [r for r in rows if r["choice"] == choice]
        if choice == "chosen":
            part = [{**r, **{k: served[r["task"]][k] for k in _CASCADE_TOTALS}} if r["task"] in served else r
                    for r in part]
        if not part:
            continue
        tasks = len(part) + (len(unsized) if choice == "chosen" else 0)

        def total(col: str, how=sum, digits: int = 4, part: list[dict] = part) -> float | None:
            vals = [r[col] for r in part]
            return round(how(vals), digits) if all(finite(v) for v in vals) else None

        weights = _task_weights(records, choice)
        cost = _weighted([r["cost_usd_per_1m_output_tokens"] for r in part], weights)
        met = [r["task"] for r in part if r["meets_bar"]]
        rows.append({"task": "TOTAL", "choice": choice, "model": "", "params": total("params"),
                     "rung": "", "precision": "", "sized_for": "", "sizing_mode": "",
                     "metric": "", "quality": None, "threshold": None,
                     "meets_bar": f"{len(met)}/{tasks}", "recall_at_k": None,
                     "price_usd_per_hour": total("price_usd_per_hour"),
                     "cost_usd_per_1m_output_tokens": None if cost is None else round(cost, 4),
                     "modelled_ttft_ms": total("modelled_ttft_ms", max, 2),
                     "modelled_tpot_ms": total("modelled_tpot_ms", max, 3),
                     "modelled_throughput_tokens_per_s": total("modelled_throughput_tokens_per_s", sum, 1),
                     "modelled_memory_gb": total("modelled_memory_gb", sum, 3),
                     "weights_gb": total("weights_gb"), "measured_on": "",
                     "measured_tpot_p95_ms": total("measured_tpot_p95_ms", max, 3),
                     "aggregation": "; ".join(f"{k}: {v}" for k, v in TOTAL_RULES.items())})
    return rows + cascades


# the columns of a chosen cascade's row that the chosen TOTAL takes instead of its task's chosen model's
_CASCADE_TOTALS = ("params", "price_usd_per_hour", "cost_usd_per_1m_output_tokens", "meets_bar")


def _cascade_row(rec: DecisionRecord) -> dict | None:
    """The ladder's kept cascade pair (``ladder.cascade``) beside the chosen model alone, after
    the totals: the confirm half's quality, the deferral rate, both models' parameters, the
    cost at the planned traffic and both devices' prices (each model sized alone). A chosen
    cascade is what is deployed, so the chosen TOTAL counts it instead of the model alone."""
    pair = rec.cascade_pair()
    if pair is None:
        return None
    small = rec.cascade["small_side"]
    params = (pair.get("small_params"), rec.chosen.params)
    prices = (small.get("price_per_hour"), rec.chosen.price_per_hour)
    return {"task": rec.task, "choice": "cascade" if rec.cascade.get("chosen") else "cascade (not chosen)",
            "model": f"{pair['small']} -> {pair['big']} (defers {pair['deferral_rate']:.1%})",
            "params": sum(params) if all(finite(p) for p in params) else None,
            "rung": f"{pair['small_rung']} -> {pair['big_rung']}",
            "precision": f"{small.get('precision')} -> {rec.chosen.precision}", "sized_for": small.get("gpu"),
            "sizing_mode": small.get("sizing_mode") or "", "metric": rec.metric or "",
            "quality": round(pair["quality"], 4), "threshold": rec.threshold, "meets_bar": bool(pair["meets_bar"]),
            "recall_at_k": None,
            "price_usd_per_hour": rounded(sum(prices), 4) if all(finite(p) for p in prices) else None,
            "cost_usd_per_1m_output_tokens": rounded(pair.get("cost_per_1m_tokens"), 4),
            "modelled_ttft_ms": None, "modelled_tpot_ms": None, "modelled_throughput_tokens_per_s": None,
            "modelled_memory_gb": None, "weights_gb": None, "measured_on": "", "measured_tpot_p95_ms": None}


def _best_rung(entry: dict) -> dict | None:
    """The best rung an unsized task's ladder reached: full-split results before screened-out
    ones, then by the value its decision rule compared (as ``Selection.needs`` ranks them)."""
    return max(entry.get("ladder") or [], key=lambda r: (not r["screened_out"], r["value"]), default=None)


def _unsized_row(entry: dict) -> dict:
    best = _best_rung(entry) or {}
    return {"task": entry["task"], "choice": "unsized", "model": best.get("candidate", ""),
            "params": best.get("params"), "rung": best.get("rung", ""), "precision": "",
            "sized_for": "", "sizing_mode": "", "metric": entry.get("metric", ""),
            "quality": rounded(best.get("score"), 4), "threshold": entry["threshold"],
            "meets_bar": False, "recall_at_k": None, "price_usd_per_hour": None,
            "cost_usd_per_1m_output_tokens": None, "modelled_ttft_ms": None, "modelled_tpot_ms": None,
            "modelled_throughput_tokens_per_s": None, "modelled_memory_gb": None, "weights_gb": None,
            "measured_on": "", "measured_tpot_p95_ms": None}


def unsized_lines(unsized: list[dict]) -> list[str]:
    """The printed summary's lines for the tasks no candidate could size: per task the
    ladder's verdict ("NO candidate reaches ...", its summary up to what would be needed),
    then each thing that would be needed, one line each."""
    lines = []
    for u in unsized:
        verdict, sep, _ = u["summary"].partition(" Would be needed: ")
        lines.append(verdict if sep else u["summary"])
        lines += [f"   would be needed: {n}" for n in u.get("needs") or []]
    return lines


def format_table(rows: list[dict], columns=SUMMARY_COLUMNS, skip=("aggregation",)) -> str:
    """A plain-text table for terminals and logs (long ``skip`` columns left out; empty
    cells blank, not ``None``)."""
    cols = [c for c in columns if c not in skip and any(c in r for r in rows)]
    cells = [["" if r.get(c) is None else str(r.get(c)) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line, sep] + ["  ".join(v.ljust(w) for v, w in zip(row, widths))
                                    for row in cells])


FLEET_COLUMNS = ["fleet", "groups", "devices", "usd_per_hour", "cost_usd_per_1m_output_tokens",
                 "memory_used_gib", "placement", "price_list"]


def fleet_rows(plan: FleetPlan | Mapping[str, Any]) -> list[dict]:
    """The chosen fleet beside the one-big-model baseline fleet (a fleet plan or its
    ``to_dict``): devices, $/hour at the required traffic, cost per 1M output tokens and
    memory, and where each task runs; both planned on the same price list and headroom."""
    plan = plan_json(plan)
    rows = []
    for side, body in (("chosen", plan), ("baseline", plan.get("baseline"))):
        if not body:
            rows.append({"fleet": side, "placement": plan.get("baseline_error") or "not planned"})
            continue
        t = body["totals"]
        rows.append({
            "fleet": side, "groups": len(body["groups"]), "devices": t["devices"],
            "usd_per_hour": rounded(t["cost_per_hour"], 4),
            "cost_usd_per_1m_output_tokens": rounded(t["cost_per_1m_output_tokens"], 4),
            "memory_used_gib": rounded(t["memory_used_bytes"] / 2**30, 3),  # models + one reserve per device
            "placement": "; ".join(f"{g['label']} x{g['replicas']}: " + ", ".join(
                t for m in g["models"] for t in m["tasks"]) for g in body["groups"]),
            "price_list": (body.get("price_list") or {}).get("name")})
    return rows


def fleet_price_list(fleet: FleetPlan | Mapping[str, Any]) -> str:
    """The name of the price list a fleet plan (or its ``to_dict``) was packed on."""
    fleet = plan_json(fleet)
    return (fleet.get("price_list") or {}).get("name") or "unnamed price list"
