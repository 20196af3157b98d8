"""Tables and Plotly charts for the steps' artifacts, and the final decision summary."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rightsizer.select import Selection


def leaderboard_rows(sel: Selection) -> list[dict]:
    """One row per (candidate, rung) tried, in the order they were tried: quality with its
    95% CI, the decision value, whether screening stopped it, latency and memory measured
    here (when the ladder measured them) and the evaluation cost spent."""
    rows = []
    for r in sel.tried:
        lat = sel.latency.get(r.candidate, {})
        rows.append({"candidate": r.candidate, "params": r.params, "rung": r.rung,
                     sel.metric: round(r.score, 4), "ci_low": round(r.ci_low, 4),
                     "ci_high": round(r.ci_high, 4), "value": round(r.value, 4),
                     "threshold": r.threshold, "passed": r.passed,
                     "screened_out": r.screened_out,
                     "bound": None if r.bound is None else round(r.bound, 4),
                     "p95_ttft_ms": round(lat["ttft_p95_ms"], 3) if lat else None,
                     "p95_tpot_ms": round(lat["tpot_p95_ms"], 3) if lat else None,
                     "peak_memory_bytes": lat.get("peak_memory_bytes") if lat else None,
                     "eval_examples": r.n, "eval_split": r.n_total,
                     "train_seconds": round(r.train_seconds, 2),
                     "cost_seconds": round(r.seconds, 2)})
    for d in sel.dropped:
        rows.append({"candidate": d["candidate"], "params": d["params"], "rung": "slo_prefilter",
                     "passed": False, "eval_examples": 0, "cost_seconds": 0.0,
                     "reason": d["reason"]})
    return rows


def ladder_figure(sel: Selection) -> go.Figure:
    """Score of every rung tried, smallest candidate first, with the threshold drawn."""
    fig = go.Figure()
    for rung in dict.fromkeys(r.rung for r in sel.tried):
        rs = [r for r in sel.tried if r.rung == rung]
        fig.add_bar(name=rung, x=[f"{r.candidate}<br>{r.params:,} params" for r in rs],
                    y=[r.score for r in rs],
                    error_y=dict(type="data", symmetric=False,
                                 array=[r.ci_high - r.score for r in rs],
                                 arrayminus=[r.score - r.ci_low for r in rs]))
    fig.add_hline(y=sel.threshold, line_dash="dash", annotation_text=f"threshold {sel.threshold}")
    fig.update_layout(title=f"{sel.task}: selection ladder ({sel.metric}, 95% CI)",
                      barmode="group", yaxis_title=sel.metric, yaxis_range=[0, 1.05])
    return fig


def pareto_points(sel: Selection) -> list[dict]:
    """Each candidate's best rung (quality, CI, params, latency if measured), and whether it
    is on the Pareto front (no other point is both smaller and at least as good)."""
    pts = []
    for ref, r in sel.best_per_candidate().items():
        lat = sel.latency.get(ref, {})
        pts.append({"candidate": ref, "rung": r.rung, "params": r.params, "score": r.score,
                    "ci_low": r.ci_low, "ci_high": r.ci_high, "passed": r.passed,
                    "screened_out": r.screened_out,
                    "tpot_p95_ms": lat.get("tpot_p95_ms") if lat else None})
    for p in pts:
        p["pareto"] = not any(q is not p and q["params"] <= p["params"] and q["score"] >= p["score"]
                              and (q["params"], q["score"]) != (p["params"], p["score"])
                              for q in pts)
    return sorted(pts, key=lambda p: p["params"])


def pareto_figure(sel: Selection) -> go.Figure:
    """Quality against parameters (and p95 time per output token when measured), each
    candidate's best rung with its CI, the Pareto front and the threshold drawn."""
    pts = pareto_points(sel)
    with_latency = any(p["tpot_p95_ms"] is not None for p in pts)
    cols = 2 if with_latency else 1
    fig = make_subplots(rows=1, cols=cols, shared_yaxes=True, subplot_titles=(
        ("parameters", "p95 time per output token here (ms)") if with_latency else ("parameters",)))
    axes = [("params", 1)] + ([("tpot_p95_ms", 2)] if with_latency else [])
    for key, col in axes:
        shown = [p for p in pts if p[key] is not None]
        fig.add_scatter(
            x=[p[key] for p in shown], y=[p["score"] for p in shown], mode="markers+text",
            text=[f"{p['candidate']} ({p['rung']})" for p in shown], textposition="top center",
            marker=dict(size=12, symbol=["star" if p["passed"] else
                                         ("x" if p["screened_out"] else "circle") for p in shown],
                        color=["#2a9d8f" if p["passed"] else "#e76f51" for p in shown]),
            error_y=dict(type="data", symmetric=False,
                         array=[p["ci_high"] - p["score"] for p in shown],
                         arrayminus=[p["score"] - p["ci_low"] for p in shown]),
            name="best rung per candidate", showlegend=col == 1, row=1, col=col)
        front = sorted((p for p in shown if p["pareto"]), key=lambda p: p[key])
        fig.add_scatter(x=[p[key] for p in front], y=[p["score"] for p in front], mode="lines",
                        line=dict(dash="dot", color="#264653"), name="Pareto front",
                        showlegend=col == 1, row=1, col=col)
        fig.add_hline(y=sel.threshold, line_dash="dash", line_color="#e9c46a",
                      annotation_text=f"threshold {sel.threshold}", row=1, col=col)
    fig.update_xaxes(type="log", row=1, col=1, title_text="parameters (log)")
    fig.update_yaxes(title_text=f"{sel.metric} (95% CI)", range=[0, 1.05], row=1, col=1)
    fig.update_layout(title=f"{sel.task}: quality vs size (star: chosen, x: stopped by screening)")
    return fig


def latency_figure(task: str, measurements: dict[str, dict]) -> go.Figure:
    """p50/p95 TTFT and time per output token for each measured model."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("time to first token (ms)",
                                                        "time per output token (ms)"))
    for i, key in enumerate(("ttft", "tpot"), start=1):
        for q in ("p50", "p95"):
            fig.add_bar(name=f"{key} {q}", x=list(measurements),
                        y=[m[f"{key}_{q}_ms"] for m in measurements.values()], row=1, col=i)
    fig.update_layout(title=f"{task}: latency measured on this machine", barmode="group")
    return fig


SUMMARY_COLUMNS = ("task", "choice", "model", "params", "rung", "precision", "gpu",
                   "quality", "threshold", "meets_bar", "p95_ttft_ms", "p95_tpot_ms",
                   "gpu_memory_gb", "cost_per_1m_tokens")


def summary_rows(records: list[dict]) -> list[dict]:
    """Chosen deployment beside the one-big-model baseline, per task and in total."""
    rows = []
    for rec in records:
        for choice in ("chosen", "baseline"):
            d = rec[choice]
            rows.append({"task": rec["task"], "choice": choice, "model": d["model"],
                         "params": d["params"], "rung": d["rung"], "precision": d["precision"],
                         "gpu": d["gpu"], "quality": round(d["quality"], 4),
                         "threshold": rec["threshold"],
                         "meets_bar": d["quality"] >= rec["threshold"],
                         "p95_ttft_ms": round(d["ttft_ms"], 2), "p95_tpot_ms": round(d["tpot_ms"], 3),
                         "gpu_memory_gb": round(d["memory_bytes"] / 1e9, 3),
                         "cost_per_1m_tokens": round(d["cost_per_1m_tokens"], 4)})
    for choice in ("chosen", "baseline"):
        part = [r for r in rows if r["choice"] == choice]
        n = len(part)
        rows.append({"task": "TOTAL", "choice": choice, "model": "", "params": sum(r["params"] for r in part),
                     "rung": "", "precision": "", "gpu": "",
                     "quality": round(sum(r["quality"] for r in part) / n, 4), "threshold": "",
                     "meets_bar": all(r["meets_bar"] for r in part),
                     "p95_ttft_ms": max(r["p95_ttft_ms"] for r in part),
                     "p95_tpot_ms": max(r["p95_tpot_ms"] for r in part),
                     "gpu_memory_gb": round(sum(r["gpu_memory_gb"] for r in part), 3),
                     # tokens split evenly over the tasks: the mean is the blended cost
                     "cost_per_1m_tokens": round(sum(r["cost_per_1m_tokens"] for r in part) / n, 4)})
    return rows


def format_table(rows: list[dict], columns=SUMMARY_COLUMNS) -> str:
    """A plain-text table for terminals and logs."""
    cols = [c for c in columns if any(c in r for r in rows)]
    cells = [[str(r.get(c, "")) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    line = "  ".join(c.ljust(w) for c, w in zip(cols, widths))
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line, sep] + ["  ".join(v.ljust(w) for v, w in zip(row, widths))
                                    for row in cells])


def summary_figure(records: list[dict]) -> go.Figure:
    """Chosen vs baseline per task: cost per 1M tokens, p95 per-token latency, GPU memory."""
    fig = make_subplots(rows=1, cols=3, subplot_titles=(
        "cost per 1M tokens ($)", "p95 time per output token (ms)", "GPU memory (GB)"))
    tasks = [r["task"] for r in records]
    for choice, color in (("chosen", "#2a9d8f"), ("baseline", "#e76f51")):
        for col, key, scale in ((1, "cost_per_1m_tokens", 1), (2, "tpot_ms", 1),
                                (3, "memory_bytes", 1e-9)):
            fig.add_bar(name=choice, x=tasks, y=[r[choice][key] * scale for r in records],
                        marker_color=color, showlegend=col == 1, row=1, col=col)
    fig.update_layout(title="Right-sized deployment vs one big model for every task",
                      barmode="group")
    return fig
