"""MLRun step ``report``: all decision records, the summary against the baseline."""

from __future__ import annotations

import mlrun

from functions.mlrun_io import log_plot, log_table, made_parent, run_layout
from rightsizer.size_gpu import load_record, save_record
from rightsizer.report import format_table, summary_figure, summary_rows


def report(context: mlrun.MLClientCtx, records: list, endpoint: str = "") -> None:
    """Log the summary table (chosen vs one-big-model baseline, per task and in total).

    Logs: ``summary`` (table), ``summary_chart`` (Plotly), ``decisions`` (all records, JSON),
    results ``total_cost_per_1m_tokens``, ``baseline_cost_per_1m_tokens``, ``savings``.
    """
    recs = [load_record(p) for p in records]
    rows = summary_rows(recs)
    log_table(context, "summary", rows)
    log_plot(context, "summary_chart", summary_figure(recs))
    path = made_parent(run_layout(context).decisions_file())
    save_record({"endpoint": endpoint, "records": recs}, path)
    context.log_artifact("decisions", local_path=str(path))
    chosen, base = (next(r for r in rows if r["task"] == "TOTAL" and r["choice"] == c)
                    for c in ("chosen", "baseline"))
    context.log_results({"total_cost_per_1m_tokens": chosen["cost_per_1m_tokens"],
                         "baseline_cost_per_1m_tokens": base["cost_per_1m_tokens"],
                         "savings": 1 - chosen["cost_per_1m_tokens"] / base["cost_per_1m_tokens"],
                         "decisions": str(path)})
    context.logger.info("decision summary\n" + format_table(rows))
