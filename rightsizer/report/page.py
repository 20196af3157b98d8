"""The run's report as one self-contained HTML page: the fleet plan (the saving), each task
sized alone, then per task its decision, ladder, latency, precision table and device
ranking, and per task that cannot be sized what would be needed."""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go

from rightsizer.display import finite, json_cells, rounded
from rightsizer.evaluate_plots import latency_figure
from rightsizer.plan.fleet import FleetPlan, holds_line, plan_json
from rightsizer.plan.plots import fleet_figure
from rightsizer.records import DecisionRecord, as_record
from rightsizer.report.summary import (FLEET_COLUMNS, SUMMARY_COLUMNS, TOTAL_RULES, fleet_price_list,
                                       fleet_rows, summary_rows)
from rightsizer.report.summary_plots import summary_figure
from rightsizer.select import RungResult, Selection
from rightsizer.select_plots import ladder_figure
from rightsizer.size_gpu_tables import GPU_COLUMNS, ranking_rows


def _selection_from_record(rec: DecisionRecord) -> Selection:
    """Enough of a :class:`Selection` (the ladder's results) to draw a record's ladder."""
    tried = [RungResult(**r) for r in rec.ladder or []]
    chosen = next((r for r in tried if r.passed), None)
    return Selection(task=rec.task, metric=rec.metric or "", threshold=rec.threshold,
                     decision_rule=rec.decision_rule or "point", order=[], tried=tried,
                     chosen=chosen,
                     latency={chosen.candidate: rec.chosen.measured_here or {}} if chosen else {})


def _selection_from_unsized(entry: dict) -> Selection:
    """The ladder of a task no candidate could size, as a :class:`Selection` to draw."""
    return Selection(task=entry["task"], metric=entry.get("metric", ""), threshold=entry["threshold"],
                     decision_rule=entry.get("decision_rule", "point"),
                     order=[tuple(o) for o in entry.get("order") or []],
                     tried=[RungResult(**r) for r in entry.get("ladder") or []], chosen=None)


def _html_table(rows: list[dict], columns: list[str] | None = None) -> str:
    if not rows:
        return "<p><em>none</em></p>"
    cols = columns or list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape('' if r.get(c) is None else str(r.get(c)))}</td>" for c in cols)
        + "</tr>" for r in json_cells(rows))
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            "</table></div>")


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;white-space:nowrap}th{background:#f3f3f3}
section{border-top:2px solid #264653;margin-top:2em}.scroll{overflow-x:auto}"""


PLACEMENT_COLUMNS = ["model", "tasks", "precision", "batch", "busy_fraction", "busy_per_replica",
                     "weights_gib", "kv_gib", "activations_gib", "shared_ttft_ms", "slo_ttft_ms",
                     "shared_tpot_ms", "slo_tpot_ms", "meets_slo_sharing"]


def placement_rows(group: dict) -> list[dict]:
    """The models of one fleet group (``to_dict`` form): busy fraction (whole traffic on one
    device, and per replica), memory split per device (GiB) and the worst-case latency while
    sharing the device against each model's SLO."""
    return [{"model": m["model"], "tasks": ", ".join(m["tasks"]), "precision": m["precision"],
             "batch": m["batch"], "busy_fraction": rounded(m["busy_fraction"], 3),
             "busy_per_replica": rounded(m["busy_per_replica"], 3),
             "weights_gib": rounded(m["memory"]["weights_bytes"] / 2**30, 3),
             "kv_gib": rounded(m["memory"]["kv_bytes"] / 2**30, 3),
             "activations_gib": rounded(m["memory"]["activation_bytes"] / 2**30, 3),
             "shared_ttft_ms": rounded(m["ttft_shared_ms"], 2), "slo_ttft_ms": m["slo"]["ttft_ms"],
             "shared_tpot_ms": rounded(m["tpot_shared_ms"], 3), "slo_tpot_ms": m["slo"]["tpot_ms"],
             "meets_slo_sharing": m["meets_slo"]} for m in group["models"]]


def _group_id(side: str, group: dict) -> str:
    # both fleets number their groups from g0: the side keeps the anchors apart
    return f"fleet-{side}-{group['name']}"


def _fleet_html(fleet: dict, chart) -> list[str]:
    """The fleet section: both fleets' totals, then per fleet its chart and every group."""
    cmp = fleet.get("comparison") or {}
    saving = cmp.get("saving")
    base = fleet.get("baseline")
    line = (f"Chosen fleet ${fleet['totals']['cost_per_hour']:.3f}/hour"
            + (f" against ${base['totals']['cost_per_hour']:.3f}/hour for the baseline fleet"
               if base else f"; baseline fleet not planned ({fleet.get('baseline_error') or 'no reason given'})")
            + (f" (saving {saving:.0%})" if finite(saving) else "")
            + f": both packed on price list {fleet_price_list(fleet)}, headroom {fleet['headroom']:g}, "
            f"solver {fleet['solver']}; memory, busy fractions and latency modelled by the sizing engine.")
    parts = ['<section id="fleet"><h2>The saving: fleet plan, chosen vs one big model</h2>', f"<p>{html.escape(line)}</p>",
             _html_table(fleet_rows(fleet), FLEET_COLUMNS)]
    for side, body in (("chosen", fleet), ("baseline", base)):
        if not body:
            continue
        heading = "Chosen fleet" if side == "chosen" else "Baseline fleet (one big model for every task)"
        parts += [f"<h3>{heading}</h3>", chart(fleet_figure(body), f"fleet-{side}")]
        for g in body["groups"]:
            busy, room = g["busy_per_replica"], g["headroom"]
            met = all(m["meets_slo"] for m in g["models"])
            slo = ("met" if met else "missed") + (
                "" if len(g["models"]) == 1 else " by every model while sharing" if met else " while sharing")
            price = (f"${g['price_per_hour']:.3f}/hour" if g["replicas"] == 1 else
                     f"${g['price_per_hour']:.3f}/hour each (${g['cost_per_hour']:.3f}/hour)")
            parts += [f'<div id="{html.escape(_group_id(side, g))}" class="group">'
                      f"<h4>Group {html.escape(g['name'])}: {html.escape(g['label'])} x{g['replicas']}</h4>",
                      "<p>" + html.escape(
                          f"{g['replicas']} replica{'s' if g['replicas'] != 1 else ''} at {price}; "
                          f"memory {g['memory_used_bytes'] / 2**30:.2f} of {g['memory_capacity_bytes'] / 2**30:.2f} "
                          f"GiB per device (one runtime reserve {g['reserve_bytes'] / 2**30:.2f} GiB); busy "
                          f"{busy:.2f} per replica against the headroom {room:g}; SLO {slo}") + ".</p>",
                      _html_table(placement_rows(g), PLACEMENT_COLUMNS), "</div>"]
    notes = fleet.get("notes") or []
    if notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>")
    parts += _mixed_html(fleet.get("mixed_devices"))
    parts.append("</section>")
    return parts


def _mixed_html(mixed: dict | None) -> list[str]:
    """The mixed-device alternative (``plan_mixed_devices``): what it found, and where each split
    task's parts would run."""
    if not mixed:
        return []
    out = ["<h3>Mixed device types for one task (split by prompt length)</h3>",
           f"<p>{html.escape(mixed.get('note') or '')}</p>"]
    if mixed.get("plan"):
        rows = [{"task": task, "part": p["part"], "prompt tokens": f"{p['prompt_tokens'][0]}-{p['prompt_tokens'][1]}",
                 "device": p["device"], "group": p["group"], "output tok/s": round(p["throughput_tokens_per_s"], 1)}
                for task, parts in sorted(mixed.get("splits", {}).items()) for p in parts]
        out += [_html_table(rows, ["task", "part", "prompt tokens", "device", "group", "output tok/s"]),
                "<p>" + html.escape("Deployed: the entry point routes a split task's requests by their input length."
                                    if mixed.get("deployed") else "Not deployed: " + mixed.get("why_not_deployed", ""))
                + "</p>"]
    return out


def _placed(fleet: dict, task: str) -> str:
    """Where a task's model runs in the chosen fleet (and the baseline fleet), one paragraph."""
    for g in fleet["groups"]:
        m = next((m for m in g["models"] if task in m["tasks"]), None)
        if m is None:
            continue
        others = [t for o in g["models"] for t in o["tasks"] if t != task]
        text = (f"{g['label']} x{g['replicas']}, "
                + (f"sharing it with {', '.join(others)}" if others else "alone on it")
                + f"; busy {m['busy_per_replica']:.2f} per replica; "
                f"SLO {'met' if m['meets_slo'] else 'missed'}{' while sharing' if others else ''} "
                f"(TTFT {m['ttft_shared_ms']:.1f} "
                f"of {m['slo']['ttft_ms']:g} ms, TPOT {m['tpot_shared_ms']:.2f} of {m['slo']['tpot_ms']:g} ms)"
                + (f"; the group {holds_line(g['holds'])}" if g.get("holds") else ""))
        base = next((bg for bg in (fleet.get("baseline") or {}).get("groups", [])
                     for bm in bg["models"] if task in bm["tasks"]), None)
        tail = f" The baseline fleet serves it from {base['label']} x{base['replicas']}." if base else ""
        return (f'<p class="placement">Placed in fleet group <a href="#{html.escape(_group_id("chosen", g))}">'
                f"{html.escape(g['name'])}</a> on {html.escape(text)}.{html.escape(tail)}</p>")
    return '<p class="placement">Not placed in the fleet plan.</p>'


def decision_report_html(records: Sequence[DecisionRecord | Mapping[str, Any]],
                         title: str = "Rightsizer decision report", endpoint: str = "",
                         fleet: FleetPlan | Mapping[str, Any] | None = None, unsized: list[dict] = (),
                         note: str = "", url: str = "", serve_command: str = "") -> str:
    """One self-contained HTML page for the run: the summary table and payoff chart, then per
    task its decision, why nothing smaller, the ladder, latency vs the baseline, the precision
    table and the device ranking. plotly.js is inlined once; every chart reuses it.

    ``records``: :class:`~rightsizer.records.DecisionRecord` or their JSON.
    ``fleet``: the fleet plan (or its ``to_dict()``). With it the payoff chart's $/hour is
    the fleets', a "Fleet plan" section shows both fleets (totals, charts, every group: its
    device, replicas, models with busy fraction, memory split and SLO while sharing), and
    each task says in which group its model was placed.

    ``unsized``: the tasks no candidate could size (``rightsizer.unsized.unsized_entry``): a
    row in the summary table and a section each (the ladder's summary, what would be needed,
    the ladder chart). ``note``: what that did to the deployment
    (``rightsizer.unsized.missing_message``), shown under the title. ``url``: what a client
    calls; ``serve_command``: offline, the command that serves the run's models there."""
    import plotly.io as pio

    records = [as_record(r) for r in records]
    fleet = plan_json(fleet) if fleet else None

    def chart(fig: go.Figure, div_id: str) -> str:
        return pio.to_html(fig, full_html=False, include_plotlyjs=False, div_id=div_id)

    parts = [f"<h1>{html.escape(title)}</h1>"]
    if endpoint:
        call = f" at <code>{html.escape(url)}/v1</code> (OpenAI) and <code>{html.escape(url)}/v2</code>" if url else ""
        serve = (f" after <code>{html.escape(serve_command)}</code>" if serve_command else "")
        parts.append(f"<p>Serving endpoint: <code>{html.escape(endpoint)}</code>; call it{call}{serve}.</p>")
    if note:
        parts.append(f'<p class="missing"><strong>{html.escape(note)}</strong></p>')
    rows = summary_rows(records, unsized)
    if fleet:  # the saving is the fleet plan's: what is deployed comes first
        parts += _fleet_html(fleet, chart)
        parts += ["<h2>Each task sized alone: chosen vs one big model</h2>",
                  "<p>Not the saving: here every task is priced on a device of its own; the fleet plan "
                  "above packs the task models together, and its comparison is what deploying saves.</p>"]
    else:
        parts += ["<h2>Each task sized alone: chosen vs one big model</h2>"]
    if records:
        parts.append(chart(summary_figure(records, fleet), "summary"))
    parts += [_html_table(rows, [c for c in SUMMARY_COLUMNS if c != "aggregation"]),
              f"<p>TOTAL rows: {html.escape('; '.join(f'{k}: {v}' for k, v in TOTAL_RULES.items()))}.</p>"]
    for i, rec in enumerate(records):
        task = html.escape(rec.task)
        parts.append(f'<section id="task-{task}"><h2>Task {task}</h2>')
        parts.append(f"<p>{html.escape(rec.summary or '')}</p>")
        if fleet:
            parts.append(_placed(fleet, rec.task))
        why = rec.why_not_smaller or []
        if why:
            parts.append("<h3>Why not smaller</h3><ul>"
                         + "".join(f"<li>{html.escape(w)}</li>" for w in why) + "</ul>")
        baseline = {"model": rec.baseline.model, "params": rec.baseline.params, "quality": rec.baseline.quality}
        if rec.ladder:
            parts += ["<h3>Selection ladder</h3>",
                      chart(ladder_figure(_selection_from_record(rec), baseline), f"ladder-{i}")]
        sides = (("chosen", rec.chosen), ("baseline", rec.baseline))
        lat = {f"{c} {d.model}": d.measured_by_batch or d.measured_here
               for c, d in sides if d.measured_by_batch or d.measured_here}
        if lat:
            parts += ["<h3>Latency measured, chosen vs baseline</h3>",
                      chart(latency_figure(rec.task, lat), f"latency-{i}")]
        ranking = ranking_rows(rec.gpu_options or [])
        parts += ["<h3>Precision search</h3>", _html_table(rec.precision_search or [], None),
                  "<h3>Device ranking (modelled, chosen model)</h3>",
                  _html_table(ranking, [c for c in GPU_COLUMNS if any(c in r for r in ranking)] or None),
                  "</section>"]
    for i, entry in enumerate(unsized):
        task = html.escape(entry["task"])
        parts += [f'<section id="task-{task}" class="unsized"><h2>Task {task}: not sized</h2>',
                  f"<p>{html.escape(entry['summary'])}</p>", "<h3>Would be needed</h3><ul>"
                  + "".join(f"<li>{html.escape(n)}</li>" for n in entry.get("needs") or []) + "</ul>"]
        if entry.get("ladder"):
            parts += ["<h3>Selection ladder</h3>",
                      chart(ladder_figure(_selection_from_unsized(entry)), f"ladder-unsized-{i}")]
        parts.append("</section>")
    plotly_js = _plotly_js()
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_CSS}</style>{plotly_js}</head><body>"
            + "\n".join(parts) + "</body></html>")


def _plotly_js() -> str:
    """plotly.js, inlined once (the page opens offline, from the MLRun UI or a mail)."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">{get_plotlyjs()}</script>'