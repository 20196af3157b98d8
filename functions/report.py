"""MLRun step ``report``: all decision records, the summary against the baseline."""

from __future__ import annotations

import json

import mlrun

from functions.mlrun_io import log_results, callable_endpoint, log_plot, log_table, made_parent, run_layout
from rightsizer.report import (FLEET_COLUMNS, decision_report_html, fleet_rows, format_table,
                               summary_figure, summary_rows, unsized_lines)
from rightsizer.plan import FleetPlan
from rightsizer.records import DECISIONS_SCHEMA_VERSION, as_record
from rightsizer.size_gpu import save_record
from rightsizer.unsized import load_outcomes, missing_message

COST = "cost_usd_per_1m_output_tokens"


def report(context: mlrun.MLClientCtx, selections: list, endpoint: str = "", plan: str = "",
           app: str = "") -> None:
    """Log the summary table (chosen vs one-big-model baseline, per task and in total).

    ``selections``: the select steps' selection paths, one per task of the application. The
    decision records of the sized tasks are read from the run's layout; a task whose bar no
    candidate reaches has none and is shown as such (``rightsizer.unsized``). ``endpoint``:
    the deploy step's entry point; empty when nothing was deployed. ``app``: the application
    spec the run sized (recorded in ``decisions``, so ``reevaluate`` finds it from the run).

    Logs: ``summary`` (table; the TOTAL rows say how each column is combined; a task that
    cannot be sized is a row with choice "unsized"), ``summary_chart`` (Plotly: the payoff),
    ``decision_report`` (one self-contained HTML page: summary, and per task its ladder,
    latency, precision table and device ranking; per unsized task its summary and what would
    be needed), ``decisions`` (all records and the unsized tasks, JSON), results
    ``total_cost_per_1m_tokens``, ``baseline_cost_per_1m_tokens`` (USD per 1M output tokens,
    weighted by each task's throughput target; each task sized alone), ``savings`` (the fleet
    plan's saving, what is deployed; without a plan, each task alone),
    ``savings_each_task_alone``, ``unsized_tasks``, ``deployed``,
    ``missing`` (the line on the unsized tasks: deployed without them, or why nothing was
    deployed), ``decisions`` and ``decision_report`` (paths).
    With ``plan`` (the path of the fleet plan step's ``fleet_plan`` JSON), the plan goes to
    both the chart and the page: ``summary_chart``'s $/hour is the chosen fleet beside the
    baseline fleet, and ``decision_report`` gains a fleet section (both fleets, every group's
    device, replicas, models, busy fraction, memory split and SLO while sharing) and says in
    each task's section where its model was placed. Also logs ``fleet_summary`` (table: the
    chosen fleet beside the baseline fleet) and results ``fleet_cost_per_hour``,
    ``baseline_fleet_cost_per_hour`` and ``fleet_savings``.
    """
    layout = run_layout(context)
    found, unsized = load_outcomes(selections, layout)
    recs = [as_record(r) for r in found]
    missing = missing_message([r.task for r in recs], unsized, deployed=bool(endpoint))
    body = json.loads(open(plan).read()) if plan else None  # as the plan step wrote it, with its function specs
    fleet = FleetPlan.from_dict(body, source=plan) if body else None
    rows = summary_rows(recs, unsized)
    log_table(context, "summary", rows)
    if recs:
        log_plot(context, "summary_chart", summary_figure(recs, fleet))
    path = made_parent(layout.decisions_file())
    url, serve = callable_endpoint(context, endpoint)
    save_record({"schema_version": DECISIONS_SCHEMA_VERSION, "app": app, "endpoint": endpoint, "url": url,
                 "serve_command": serve, "records": [r.to_dict() for r in recs], "fleet_plan": body,
                 "unsized": unsized, "deployed": bool(endpoint), "missing": missing}, path)
    context.log_artifact("decisions", local_path=str(path))
    page = made_parent(layout.decision_report_file())
    page.write_text(decision_report_html(recs, endpoint=endpoint, fleet=fleet, unsized=unsized, note=missing,
                                         url=url, serve_command=serve))
    context.log_artifact("decision_report", local_path=str(page), format="html")
    chosen, base = (next((r for r in rows if r["task"] == "TOTAL" and r["choice"] == c), {})
                    for c in ("chosen", "baseline"))
    cost, base_cost = chosen.get(COST), base.get(COST)
    alone = (1 - cost / base_cost) if cost is not None and base_cost else None
    # the saving is the fleet plan's (what is deployed); each task priced alone is a per-task view
    fleet_saving = (fleet.comparison() or {}).get("saving") if fleet else None
    log_results(context, {"total_cost_per_1m_tokens": cost,
                         "baseline_cost_per_1m_tokens": base_cost,
                         "savings": fleet_saving if fleet else alone, "savings_each_task_alone": alone,
                         "unsized_tasks": [u["task"] for u in unsized], "deployed": bool(endpoint),
                         "missing": missing, "decisions": str(path), "decision_report": str(page),
                         "url": url, "serve_command": serve})
    context.logger.info("decision summary\n" + "\n".join([format_table(rows), *unsized_lines(unsized)]
                                                          + ([missing] if missing else [])))
    if fleet is not None:
        frows = fleet_rows(fleet)
        log_table(context, "fleet_summary", frows)
        cmp = fleet.comparison() or {}
        log_results(context, {"fleet_cost_per_hour": fleet.cost_per_hour,
                             "baseline_fleet_cost_per_hour": (cmp.get("cost_per_hour") or {}).get("baseline"),
                             "fleet_savings": cmp.get("saving")})
        context.logger.info("fleet plan (chosen vs baseline)\n" + format_table(frows, FLEET_COLUMNS))
