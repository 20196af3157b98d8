"""Tables and Plotly charts for the steps' artifacts, the run's summary and its HTML report.

Every chart says where its numbers come from: *measured* (on which device) or *modelled*
(by the sizing engine, for which device and in which mode). Hover values are rounded to
what a reader compares; tables name units (and the currency) in their column names.
"""

from __future__ import annotations

import html
import json
import math
import textwrap
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rightsizer.units import human_bytes
from rightsizer.plan.plots import fleet_figure
from rightsizer.select import RungResult, Selection

CHOSEN, BASELINE, FAIL, BAR, FADED = "#2a9d8f", "#e76f51", "#d62728", "#b8860b", "#9e9e9e"
RUNG_COLORS = ("#457b9d", "#8d99ae", "#2a9d8f", "#e9c46a", "#6d597a")


def _params(n: int | float) -> str:
    """Parameter count as a reader says it: 1.2M, 350K, 7.0B."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def _wrap(text: str, width: int = 28, lines: int = 3) -> str:
    """Wrap a long label onto at most ``lines`` lines (``<br>``) so it is not clipped."""
    parts = textwrap.wrap(str(text), width) or [""]
    if len(parts) > lines:
        parts = parts[:lines]
        parts[-1] = parts[-1][: width - 1] + "…"
    return "<br>".join(parts)


def _axis_label(task: str) -> str:
    """A task name as an axis category: broken after its underscores, so the names of
    neighbouring bars do not run into each other."""
    return "_<br>".join(task.split("_")) if len(task) > 10 else task


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def json_cells(rows: list[dict]) -> list[dict]:
    """Rows with every dict or list cell written as JSON (a CSV cell of Python repr cannot be
    read back by anything but Python)."""
    return [{k: json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list, tuple)) else v
             for k, v in r.items()} for r in rows]


def _device(sel: Selection) -> str:
    """The device the select step measured on (its latency records name it)."""
    devices = sorted({lat.get("device", "") for lat in sel.latency.values() if lat.get("device")})
    return ", ".join(devices) or "this machine"


# --------------------------------------------------------------------------- select


def leaderboard_rows(sel: Selection) -> list[dict]:
    """One row per (candidate, rung) tried, in the order they were tried: quality with its
    95% CI, the decision value, whether screening stopped it (and the bound that did), p95
    latency and peak memory measured on the select step's machine (``measured_on``), the
    evaluation cost spent, and for a rung that retrieved with gold passages the retriever's
    recall@k (None otherwise)."""
    rows = []
    for r in sel.tried:
        lat = sel.latency.get(r.candidate, {})
        rows.append({"candidate": r.candidate, "params": r.params, "rung": r.rung,
                     "prompt_format": r.prompt_format, sel.metric: round(r.score, 4),
                     # beside the metric: a low recall is a retrieval miss, not a model miss
                     "retrieval_recall_at_k": _num(r.retrieval.get("recall_at_k"), 4),
                     "ci_low": round(r.ci_low, 4),
                     "ci_high": round(r.ci_high, 4), "value": round(r.value, 4),
                     "threshold": r.threshold, "passed": r.passed,
                     "screened_out": r.screened_out,
                     "screening_bound": None if r.bound is None else round(r.bound, 4),
                     "eval_examples": r.n, "eval_split_examples": r.n_total,
                     "measured_on": lat.get("device") if lat else None,
                     "measured_ttft_p95_ms": round(lat["ttft_p95_ms"], 3) if lat else None,
                     "measured_tpot_p95_ms": round(lat["tpot_p95_ms"], 3) if lat else None,
                     "measured_peak_memory_bytes": lat.get("peak_memory_bytes") if lat else None,
                     "train_seconds": round(r.train_seconds, 2),
                     "cost_seconds": round(r.seconds, 2)})
    for d in sel.dropped:
        rung = "slo_prefilter" if d.get("kind", "slo") == "slo" else "not_sizable"
        rows.append({"candidate": d["candidate"], "params": d["params"], "rung": rung,
                     "passed": False, "eval_examples": 0, "cost_seconds": 0.0,
                     "reason": d["reason"]})
    return rows


def selection_baseline(sel: Selection) -> dict | None:
    """The one-big-model baseline (largest candidate, zero-shot) as the ladder saw it: its
    score when the ladder reached it, else only its size (``quality`` None)."""
    if not sel.order:
        return None
    model, params = sel.order[-1]
    zs = next((r for r in sel.tried if r.candidate == model and r.rung == "zero_shot"), None)
    return {"model": model, "params": params, "quality": zs.score if zs else None,
            "n": zs.n if zs else None, "n_total": zs.n_total if zs else None}


def _bar_label(r: RungResult) -> str:
    n = f"n={r.n}/{r.n_total}" if r.n_total else f"n={r.n}"
    return f"{r.score:.2f}<br>{n}" + ("<br>screened" if r.screened_out else "")


def ladder_figure(sel: Selection, baseline: dict | None = None) -> go.Figure:
    """Score of every rung tried, smallest candidate first, with the bar drawn.

    Each bar says how many examples it scored (``n=20/160``); bars stopped by screening are
    hatched and faded, with the screening bound (the most the full split could still have
    given) marked above them. The chosen rung is outlined. ``baseline`` (``model``,
    ``params``, ``quality``; default: what the ladder saw of the largest candidate) is drawn
    as a reference line when its score is known.
    """
    baseline = baseline if baseline is not None else selection_baseline(sel)
    rule = "CI lower end" if sel.decision_rule == "ci_lower" else "score"
    fig = go.Figure()
    chosen = sel.chosen
    bound_shown = False
    for i, rung in enumerate(dict.fromkeys(r.rung for r in sel.tried)):
        rs = [r for r in sel.tried if r.rung == rung]
        xs = [f"{r.candidate}<br>{_params(r.params)} params" for r in rs]
        is_chosen = [chosen is not None and r.candidate == chosen.candidate and r.rung == chosen.rung
                     for r in rs]
        fig.add_bar(
            name=rung, x=xs, y=[r.score for r in rs], offsetgroup=rung,
            text=[_bar_label(r) for r in rs], textposition="inside", insidetextanchor="start",
            textangle=0, textfont=dict(size=11, color="#1a1a1a"),
            marker=dict(color=RUNG_COLORS[i % len(RUNG_COLORS)],
                        opacity=[0.45 if r.screened_out else 1.0 for r in rs],
                        pattern=dict(shape=["/" if r.screened_out else "" for r in rs]),
                        line=dict(color=["black" if c else "rgba(0,0,0,0)" for c in is_chosen],
                                  width=[3 if c else 0 for c in is_chosen])),
            error_y=dict(type="data", symmetric=False, array=[r.ci_high - r.score for r in rs],
                         arrayminus=[r.score - r.ci_low for r in rs], color="#333"),
            customdata=[[r.n, r.n_total, r.ci_low, r.ci_high, r.value, r.reason or "passed"] for r in rs],
            hovertemplate=(f"%{{x}} {rung}<br>{sel.metric} %{{y:.3f}} on %{{customdata[0]}} of "
                           "%{customdata[1]} examples<br>95% CI %{customdata[2]:.3f}-%{customdata[3]:.3f}"
                           "<br>%{customdata[5]}<extra></extra>"))
        # the screening bound sits on its own bar (scattermode "group" offsets it like the bars)
        cut = [(x, r) for x, r in zip(xs, rs) if r.screened_out and r.bound is not None]
        if cut:
            fig.add_scatter(
                x=[x for x, _ in cut], y=[r.bound for _, r in cut], offsetgroup=rung,
                mode="markers+text", name="screening bound", legendgroup="bound",
                showlegend=not bound_shown,
                marker=dict(symbol="line-ew-open", size=30, color=FAIL, line=dict(width=3)),
                text=[f"≤{r.bound:.2f}" for _, r in cut], textposition="top center",
                textfont=dict(color=FAIL, size=11), cliponaxis=False,
                hovertemplate=(f"{rung}: at most %{{y:.3f}} on the full split, under the bar "
                               f"{sel.threshold}: stopped early<extra></extra>"))
            bound_shown = True
    fig.add_hline(y=sel.threshold, line_dash="dash", line_color=BAR,
                  annotation_text=f"bar: {sel.metric} {rule} ≥ {sel.threshold}",
                  annotation_position="top left")
    if baseline and baseline.get("quality") is not None:
        fig.add_hline(y=baseline["quality"], line_dash="dot", line_color=BASELINE,
                      annotation_text=(f"baseline {baseline['model']} ({_params(baseline['params'])}, "
                                       f"zero-shot) {baseline['quality']:.3f}"),
                      annotation_position="bottom right")
    verdict = (f"chosen: {chosen.candidate} at {chosen.rung}" if chosen
               else "no candidate passed")
    if baseline and baseline.get("quality") is None:
        verdict += f"; baseline {baseline['model']} not reached"
    fig.update_layout(
        title=dict(text=(f"{sel.task}: selection ladder, smallest candidate first ({verdict})"
                         f"<br><sup>{sel.metric} with 95% CI, measured on {_device(sel)}; n = examples "
                         "scored; hatched: stopped by screening, with its bound</sup>")),
        barmode="group", scattermode="group", yaxis_title=f"{sel.metric} (0-1)",
        yaxis_range=[0, 1.18], xaxis_title="candidate (parameters)", margin=dict(t=90, r=140),
        template="plotly_white", uniformtext=dict(minsize=10, mode="show"))
    return fig


def pareto_points(sel: Selection) -> list[dict]:
    """Each candidate's best rung (quality, CI, params, latency if measured), and whether it
    is on the Pareto front (no other point is both smaller and at least as good)."""
    pts = []
    for ref, r in sel.best_per_candidate().items():
        lat = sel.latency.get(ref, {})
        pts.append({"candidate": ref, "rung": r.rung, "params": r.params, "score": r.score,
                    "ci_low": r.ci_low, "ci_high": r.ci_high, "passed": r.passed,
                    "screened_out": r.screened_out, "n": r.n, "n_total": r.n_total,
                    "tpot_p95_ms": lat.get("tpot_p95_ms") if lat else None})
    for p in pts:
        p["pareto"] = not any(q is not p and q["params"] <= p["params"] and q["score"] >= p["score"]
                              and (q["params"], q["score"]) != (p["params"], p["score"])
                              for q in pts)
    return sorted(pts, key=lambda p: p["params"])


def _log_range(values: list[float], pad: float = 2.5) -> list[float]:
    """A log-axis range with room for the labels beside the outermost points."""
    lo, hi = min(values), max(values)
    return [math.log10(lo / pad), math.log10(hi * pad)]


def pareto_figure(sel: Selection, baseline: dict | None = None) -> go.Figure:
    """Quality against parameters (and p95 time per output token measured by the select step,
    when it measured), each candidate's best rung with its CI, the Pareto front, the bar and
    the one-big-model baseline (a point when its score is known, else its size as a line)."""
    baseline = baseline if baseline is not None else selection_baseline(sel)
    pts = pareto_points(sel)
    lat = next(iter(sel.latency.values()), {})
    with_latency = any(p["tpot_p95_ms"] is not None for p in pts)
    where = (f"measured on {lat.get('device', 'this machine')}, fp32, batch {lat.get('batch', 1)}, "
             f"p95 of {lat.get('repeats', '?')} runs") if lat else ""
    cols = 2 if with_latency else 1
    fig = make_subplots(rows=1, cols=cols, shared_yaxes=True, horizontal_spacing=0.08, subplot_titles=(
        ("quality vs size", f"quality vs time per output token<br>({where})") if with_latency
        else ("quality vs size",)))
    axes = [("params", 1)] + ([("tpot_p95_ms", 2)] if with_latency else [])
    chosen = sel.chosen.candidate if sel.chosen else None
    for key, col in axes:
        shown = [p for p in pts if p[key] is not None]
        fmt = "%{x:.3s} params" if key == "params" else "%{x:.2f} ms/token"
        fig.add_scatter(
            x=[p[key] for p in shown], y=[p["score"] for p in shown], mode="markers+text",
            text=[f"{p['candidate']} ({p['rung']}, n={p['n']})" for p in shown],
            # beside the point, away from the plot's right edge
            textposition=["top left" if p[key] == max(q[key] for q in shown) and len(shown) > 1
                          else "top right" for p in shown],
            cliponaxis=False,
            marker=dict(size=[18 if p["candidate"] == chosen else 11 for p in shown],
                        symbol=["star" if p["candidate"] == chosen else
                                ("x" if p["screened_out"] else "circle") for p in shown],
                        color=[CHOSEN if p["passed"] else FAIL for p in shown],
                        opacity=[1.0 if p["candidate"] == chosen else 0.6 for p in shown],
                        line=dict(color="black", width=[2 if p["candidate"] == chosen else 0 for p in shown])),
            error_y=dict(type="data", symmetric=False,
                         array=[p["ci_high"] - p["score"] for p in shown],
                         arrayminus=[p["score"] - p["ci_low"] for p in shown]),
            hovertemplate=f"%{{text}}<br>{sel.metric} %{{y:.3f}}<br>{fmt}<extra></extra>",
            name="best rung per candidate", showlegend=col == 1, row=1, col=col)
        front = sorted((p for p in shown if p["pareto"]), key=lambda p: p[key])
        fig.add_scatter(x=[p[key] for p in front], y=[p["score"] for p in front], mode="lines",
                        line=dict(dash="dot", color="#264653"), name="Pareto front",
                        hoverinfo="skip", showlegend=col == 1, row=1, col=col)
        fig.add_hline(y=sel.threshold, line_dash="dash", line_color=BAR,
                      annotation_text=f"bar {sel.threshold}", row=1, col=col)
    xs = [p["params"] for p in pts]
    if baseline:
        xs.append(baseline["params"])
        label = f"baseline {baseline['model']} (zero-shot)"
        if baseline.get("quality") is not None:
            fig.add_scatter(x=[baseline["params"]], y=[baseline["quality"]], mode="markers+text",
                            marker=dict(symbol="square-open", size=14, color=BASELINE, line=dict(width=3)),
                            text=[f"{label} {baseline['quality']:.3f}"], textposition="bottom center",
                            cliponaxis=False, name="one-big-model baseline",
                            hovertemplate="%{text}<br>%{x:.3s} params<extra></extra>", row=1, col=1)
        else:  # the ladder stopped before the largest candidate: only its size is known here
            fig.add_vline(x=baseline["params"], line_dash="dot", line_color=BASELINE, row=1, col=1)
            fig.add_annotation(x=math.log10(baseline["params"]), y=0.08, xref="x", yref="y",
                               text=f"{label}<br>{_params(baseline['params'])} params,<br>not reached by the ladder",
                               showarrow=False, xanchor="right", align="right",
                               font=dict(color=BASELINE, size=11))
    if xs:
        fig.update_xaxes(type="log", range=_log_range(xs), row=1, col=1)
    fig.update_xaxes(title_text="parameters (log scale)", row=1, col=1)
    if with_latency:
        ts = [p["tpot_p95_ms"] for p in pts if p["tpot_p95_ms"] is not None]
        fig.update_xaxes(title_text="p95 time per output token (ms)", row=1, col=2,
                         range=[0, max(ts) * 1.35])
    fig.update_yaxes(title_text=f"{sel.metric} (95% CI)", range=[0, 1.18], row=1, col=1)
    fig.update_layout(
        title=dict(text=(f"{sel.task}: quality vs size, each candidate's best rung"
                         f"<br><sup>{sel.metric} measured on {_device(sel)}; star: chosen, "
                         "x: stopped by screening, n: examples scored</sup>")),
        margin=dict(t=110, l=70, r=40, b=60), template="plotly_white")
    return fig


# --------------------------------------------------------------------------- evaluate


def latency_figure(task: str, models: dict[str, list[dict] | dict]) -> go.Figure:
    """p50 and p95 TTFT and time per output token against batch size, measured; one colour
    per model, every model on the same axes (chosen beside baseline).

    ``models`` maps a label (``chosen``, ``baseline``, a model name) to its evaluation's
    ``latency_by_batch`` list (or one latency dict).
    """
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.1, subplot_titles=(
        "time to first token (ms)", "time per output token (ms)"))
    palette = {"chosen": CHOSEN, "baseline": BASELINE}
    others = iter(RUNG_COLORS)
    devices, repeats = set(), set()
    for label, ms in models.items():
        ms = sorted([ms] if isinstance(ms, dict) else ms, key=lambda m: m.get("batch", 1))
        color = palette.get(label.split()[0]) or next(others, FADED)
        devices |= {m.get("device", "?") for m in ms}
        repeats |= {m.get("repeats") for m in ms if m.get("repeats")}
        for col, key in ((1, "ttft"), (2, "tpot")):
            for q, dash in (("p95", "solid"), ("p50", "dot")):
                fig.add_scatter(
                    x=[m.get("batch", 1) for m in ms], y=[m[f"{key}_{q}_ms"] for m in ms],
                    mode="lines+markers", line=dict(color=color, dash=dash),
                    name=f"{label} {q}", legendgroup=f"{label} {q}", showlegend=col == 1,
                    hovertemplate=(f"{label} {q}<br>batch %{{x}}<br>%{{y:.2f}} ms"
                                   "<extra></extra>"), row=1, col=col)
    reps = "/".join(str(r) for r in sorted(repeats)) or "?"
    fig.update_xaxes(title_text="batch size (requests at once)", type="log", dtick=math.log10(2))
    fig.update_yaxes(title_text="ms", rangemode="tozero")
    fig.update_layout(
        title=dict(text=(f"{task}: latency measured on {', '.join(sorted(devices))}"
                         f"<br><sup>{' vs '.join(models)}; p95 (solid) and p50 (dotted) of "
                         f"{reps} runs per batch size</sup>")),
        template="plotly_white", margin=dict(t=100))
    return fig


# --------------------------------------------------------------------------- report

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
}


def _num(x: Any, digits: int) -> float | None:
    return round(x, digits) if _finite(x) else None


def _task_weights(records: list[dict], choice: str) -> list[float]:
    """Each task's share of the tokens: its throughput target when every task states one,
    else the throughput its deployment is sized for."""
    targets = [(r.get("slo") or {}).get("throughput_tokens_per_s") or 0 for r in records]
    if all(t > 0 for t in targets):
        return [float(t) for t in targets]
    return [float(r[choice].get("throughput_tokens_per_s") or 0) for r in records]


def _weighted(values: list[float | None], weights: list[float]) -> float | None:
    pairs = [(v, w) for v, w in zip(values, weights) if _finite(v)]
    if len(pairs) < len(values) or not sum(w for _, w in pairs):
        return None  # a task without a cost (unservable): no honest blend
    return sum(v * w for v, w in pairs) / sum(w for _, w in pairs)


def summary_rows(records: list[dict], unsized: list[dict] = ()) -> list[dict]:
    """Chosen deployment beside the one-big-model baseline, per task and in total.

    Quality is measured (the evaluate step, on the eval split); price, cost, latency,
    throughput and memory are modelled by the sizing engine for the device in ``sized_for``
    (``sizing_mode``); ``measured_tpot_p95_ms`` is what the evaluate step measured on
    ``measured_on``. The TOTAL rows combine columns as :data:`TOTAL_RULES` says.

    ``unsized``: the tasks no candidate could size (``rightsizer.unsized.unsized_entry``), one
    row each (choice "unsized": the best rung the ladder found, ``meets_bar`` False); the
    chosen TOTAL counts them among the tasks that do not meet their bar.
    """
    rows = []
    for rec in records:
        for choice in ("chosen", "baseline"):
            d = rec[choice]
            here = d.get("measured_here") or {}
            rows.append({"task": rec["task"], "choice": choice, "model": d["model"],
                         "params": d["params"], "rung": d["rung"], "precision": d["precision"],
                         "sized_for": d["gpu"], "sizing_mode": d.get("sizing_mode", ""),
                         "metric": rec.get("metric", ""), "quality": round(d["quality"], 4),
                         "threshold": rec["threshold"],
                         "meets_bar": bool(d["quality"] >= rec["threshold"]),
                         "recall_at_k": _num(d.get("retrieval_recall_at_k"), 3),
                         "price_usd_per_hour": _num(d.get("price_per_hour"), 4),
                         "cost_usd_per_1m_output_tokens": _num(d["cost_per_1m_tokens"], 4),
                         "modelled_ttft_ms": _num(d["ttft_ms"], 2),
                         "modelled_tpot_ms": _num(d["tpot_ms"], 3),
                         "modelled_throughput_tokens_per_s": _num(d.get("throughput_tokens_per_s"), 1),
                         "modelled_memory_gb": round(d["memory_bytes"] / 1e9, 3),
                         "weights_gb": round(d.get("weights_bytes", 0) / 1e9, 4),
                         "measured_on": here.get("device", ""),
                         "measured_tpot_p95_ms": _num(here.get("tpot_p95_ms"), 3)})
    rows += [_unsized_row(u) for u in unsized]
    for choice in ("chosen", "baseline"):
        part = [r for r in rows if r["choice"] == choice]
        if not part:
            continue
        tasks = len(part) + (len(unsized) if choice == "chosen" else 0)

        def total(col: str, how=sum, digits: int = 4, part: list[dict] = part) -> float | None:
            vals = [r[col] for r in part]
            return round(how(vals), digits) if all(_finite(v) for v in vals) else None

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
    return rows


def _best_rung(entry: dict) -> dict | None:
    """The best rung an unsized task's ladder reached: full-split results before screened-out
    ones, then by the value its decision rule compared (as ``Selection.needs`` ranks them)."""
    return max(entry.get("ladder") or [], key=lambda r: (not r["screened_out"], r["value"]), default=None)


def _unsized_row(entry: dict) -> dict:
    best = _best_rung(entry) or {}
    return {"task": entry["task"], "choice": "unsized", "model": best.get("candidate", ""),
            "params": best.get("params"), "rung": best.get("rung", ""), "precision": "",
            "sized_for": "", "sizing_mode": "", "metric": entry.get("metric", ""),
            "quality": _num(best.get("score"), 4), "threshold": entry["threshold"],
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


def fleet_rows(plan: dict) -> list[dict]:
    """The chosen fleet beside the one-big-model baseline fleet (a fleet plan's ``to_dict``):
    devices, $/hour at the required traffic, cost per 1M output tokens and memory, and
    where each task runs; both planned on the same price list and headroom."""
    rows = []
    for side, body in (("chosen", plan), ("baseline", plan.get("baseline"))):
        if not body:
            rows.append({"fleet": side, "placement": plan.get("baseline_error") or "not planned"})
            continue
        t = body["totals"]
        rows.append({
            "fleet": side, "groups": len(body["groups"]), "devices": t["devices"],
            "usd_per_hour": _num(t["cost_per_hour"], 4),
            "cost_usd_per_1m_output_tokens": _num(t["cost_per_1m_output_tokens"], 4),
            "memory_used_gib": _num(t["memory_used_bytes"] / 2**30, 3),  # models + one reserve per device
            "placement": "; ".join(f"{g['label']} x{g['replicas']}: " + ", ".join(
                t for m in g["models"] for t in m["tasks"]) for g in body["groups"]),
            "price_list": (body.get("price_list") or {}).get("name")})
    return rows


def _cell(trace) -> tuple[int, int]:
    """(row, col) of a trace in the 2x3 summary grid, from its axis names."""
    x = int((trace.xaxis or "x")[1:] or 1)
    return (x - 1) // 3 + 1, (x - 1) % 3 + 1


def _ratio(base: float | None, chosen: float | None) -> str:
    if not (_finite(base) and _finite(chosen)) or not chosen:
        return ""
    r = base / chosen
    return f"{r:.1f}x" if r >= 1 else f"1/{1 / r:.1f}x" if r > 0 else ""


def _fleet_side(fleet: dict, side: str) -> dict | None:
    """One side of a fleet plan's ``to_dict``: the plan itself (chosen) or its ``baseline``."""
    return fleet if side == "chosen" else fleet.get("baseline")


def _fleet_price_list(fleet: dict) -> str:
    return (fleet.get("price_list") or {}).get("name") or "unnamed price list"


def _fleet_bar(fig: go.Figure, fleet: dict, choice: str, color: str) -> None:
    """The fleet's $/hour for one side (the plan's packed devices), the ratio on the baseline's."""
    body = _fleet_side(fleet, choice)
    cost = (body or {}).get("totals", {}).get("cost_per_hour")
    chosen = fleet["totals"]["cost_per_hour"]
    ratio = _ratio(cost, chosen) if choice == "baseline" else ""
    if body is None:
        text, hover = "not planned", fleet.get("baseline_error") or "baseline fleet not planned"
    else:
        t = body["totals"]
        text = (f"${cost:.3f}/h<br>{t['devices']} device{'s' if t['devices'] != 1 else ''}"
                + (f"<br>{ratio}" if ratio else ""))
        hover = "<br>".join(f"{g['label']} x{g['replicas']}: ${g['cost_per_hour']:.3f}/h, "
                            + ", ".join(task for m in g["models"] for task in m["tasks"]) for g in body["groups"])
    fig.add_bar(x=[["fleet plan"], [choice]], y=[cost if _finite(cost) else None], name=choice,
                legendgroup=choice, showlegend=False, marker_color=color, textposition="outside",
                cliponaxis=False, text=[text], customdata=[hover],
                hovertemplate=f"{choice} fleet<br>%{{customdata}}<extra></extra>", row=1, col=2)


def summary_figure(records: list[dict], fleet: dict | None = None) -> go.Figure:
    """The payoff: chosen deployment beside the one-big-model baseline, per task.

    First quality against each task's bar (measured; a bar the model misses is marked), then
    $/hour and cost per 1M output tokens (with the all-task total), modelled time per output
    token and time to first token, and memory split into weights, KV cache + activations and
    the runtime reserve (modelled, for the device each side is sized for). Each baseline bar
    says how many times the chosen one it is.

    ``fleet``: the fleet plan (``FleetPlan.to_dict()``, the plan step's ``fleet_plan`` JSON).
    With it the $/hour panel is what is deployed: the chosen fleet beside the baseline fleet,
    both packed by the plan on its price list, instead of each task priced alone.
    """
    rows = summary_rows(records)
    per = {(r["task"], r["choice"]): r for r in rows}
    tasks = [_axis_label(r["task"]) for r in records]
    price_title = (f"fleet $/hour (fleet plan, {_fleet_price_list(fleet)}, modelled)" if fleet
                   else "price ($/hour, modelled)")
    fig = make_subplots(rows=2, cols=3, vertical_spacing=0.2, horizontal_spacing=0.07, subplot_titles=(
        "quality vs the task's bar (measured)", price_title,
        "cost per 1M output tokens ($, modelled)", "time per output token (ms, modelled)",
        "time to first token (ms, modelled)", "memory (GB, modelled)"))

    def pair(choice: str, with_total: bool = False) -> list[list[str]]:
        xs = tasks + (["all tasks"] if with_total else [])
        return [xs, [choice] * len(xs)]

    for choice, color in (("chosen", CHOSEN), ("baseline", BASELINE)):
        recs = [rec[choice] for rec in records]
        # quality: a bar that misses its threshold is red and says so
        q = [d["quality"] for d in recs]
        meets = [d["quality"] >= rec["threshold"] for d, rec in zip(recs, records)]
        other = "baseline" if choice == "chosen" else "chosen"
        fig.add_bar(x=[[tasks[0]], [choice]], y=[None], name=f"{choice} deployment", legendgroup=choice,
                    marker_color=color, row=1, col=1)  # a plain legend swatch: the quality bars below may be hatched
        fig.add_bar(
            x=pair(choice), y=q, name=choice, legendgroup=choice, marker_color=color, showlegend=False,
            marker_line=dict(color=[color if m else FAIL for m in meets], width=[0 if m else 3 for m in meets]),
            marker_pattern_shape=["" if m else "x" for m in meets],
            text=[f"{v:.3f}" + ("" if m else " ✗ misses bar")
                  + (f"<br>{_ratio(d['params'], records[i][other]['params'])} params"
                     if choice == "baseline" else "")
                  for i, (v, m, d) in enumerate(zip(q, meets, recs))],
            textposition="outside", cliponaxis=False,
            customdata=[[d["model"], d["rung"], d["precision"], rec.get("metric", "quality")]
                        for d, rec in zip(recs, records)],
            hovertemplate=("%{customdata[0]} (%{customdata[1]}, %{customdata[2]})<br>"
                           "%{customdata[3]} %{y:.3f}<extra></extra>"), row=1, col=1)
        money = [(3, "cost_per_1m_tokens", "cost_usd_per_1m_output_tokens", ".4f")]
        if fleet:  # the $/hour panel is what is deployed: the two fleets
            _fleet_bar(fig, fleet, choice, color)
        else:
            money.insert(0, (2, "price_per_hour", "price_usd_per_hour", ".3f"))
        for col, key, total_key, fmt in money:
            ys = [d.get(key) for d in recs] + [per[("TOTAL", choice)][total_key]]
            base = [rec["baseline"].get(key) for rec in records] + [per[("TOTAL", "baseline")][total_key]]
            chos = [rec["chosen"].get(key) for rec in records] + [per[("TOTAL", "chosen")][total_key]]
            fig.add_bar(x=pair(choice, True), y=ys, name=choice, legendgroup=choice, showlegend=False,
                        marker_color=color, textposition="outside", cliponaxis=False,
                        text=[(f"{y:{fmt}}" if _finite(y) else "n/a")
                              + (f"<br>{_ratio(b, c)}" if choice == "baseline" and _ratio(b, c) else "")
                              for y, b, c in zip(ys, base, chos)],
                        customdata=[d["gpu"] for d in recs] + ["all tasks"],
                        hovertemplate=f"%{{customdata}}<br>$%{{y:{fmt}}}<extra></extra>", row=1, col=col)
        for col, key in ((1, "tpot_ms"), (2, "ttft_ms")):
            ys = [d[key] for d in recs]
            fig.add_bar(x=pair(choice), y=ys, name=choice, legendgroup=choice, showlegend=False,
                        marker_color=color, textposition="outside", cliponaxis=False,
                        text=[(f"{y:.2f}" if _finite(y) else "n/a")
                              + (f"<br>{_ratio(y, rec['chosen'][key])}" if choice == "baseline" else "")
                              for y, rec in zip(ys, records)],
                        customdata=[[d["gpu"], d.get("sizing_mode", "")] for d in recs],
                        hovertemplate=("%{customdata[0]} (%{customdata[1]})<br>%{y:.2f} ms"
                                       "<extra></extra>"), row=2, col=col)
    # the bar each task must clear, drawn across both of its bars
    fig.add_scatter(x=[[t for t in tasks for _ in (0, 1)],
                       [c for _ in records for c in ("chosen", "baseline")]],
                    y=[r["threshold"] for r in records for _ in (0, 1)], mode="markers",
                    marker=dict(symbol="line-ew", size=44, color=BAR, line=dict(width=3, color=BAR)),
                    name="task's bar (threshold)",
                    hovertemplate="bar %{y:.3g}<extra></extra>", row=1, col=1)
    fig.add_bar(x=[[tasks[0]], ["baseline"]], y=[None], name="misses its bar", marker=dict(
        color="white", line=dict(color=FAIL, width=2), pattern=dict(shape="x", fgcolor=FAIL)), row=1, col=1)
    # memory: stacked components per (task, side)
    xs = [[t for t in tasks for _ in (0, 1)], [c for _ in tasks for c in ("chosen", "baseline")]]
    sides = [dict(rec[c]) for rec in records for c in ("chosen", "baseline")]  # copies: annotated below
    parts = ("weights_bytes", "kv_activation_bytes", "reserve_bytes")
    unsplit = [max(0, d["memory_bytes"] - sum(d.get(k, 0) for k in parts)) for d in sides]
    components = [("weights_bytes", "weights", "#264653"),
                  ("kv_activation_bytes", "KV cache + activations", "#8ab17d"),
                  ("reserve_bytes", "runtime reserve", "#d9d9d9")]
    if any(unsplit):  # a record written before the split was recorded: show the rest as such
        for d, rest in zip(sides, unsplit):
            d["_unsplit_bytes"] = rest
        components.append(("_unsplit_bytes", "not split", "#bdbdbd"))
    for key, name, color in components:
        fig.add_bar(x=xs, y=[d.get(key, 0) / 1e9 for d in sides], name=name, legendgroup=name,
                    marker_color=color, customdata=[d["gpu"] for d in sides],
                    hovertemplate=f"{name}<br>%{{customdata}}<br>%{{y:.3f}} GB<extra></extra>",
                    row=2, col=3)
    totals = [d["memory_bytes"] / 1e9 for d in sides]
    weights = [d.get("weights_bytes", 0) for d in sides]
    fig.add_scatter(x=xs, y=totals, mode="text", showlegend=False, hoverinfo="skip",
                    text=[f"{t:.2f}<br>weights<br>{human_bytes(w)}"
                          + (f" ({_ratio(w, weights[i - 1])})" if i % 2 and _ratio(w, weights[i - 1]) else "")
                          for i, (t, w) in enumerate(zip(totals, weights))],
                    textposition="top center", cliponaxis=False, row=2, col=3)
    fig.update_yaxes(range=[0, 1.3], title_text="score (0-1)", row=1, col=1)
    # headroom above the tallest bar for the value and ratio written on it
    tops: dict[tuple[int, int], float] = {}
    for trace in fig.data:
        if trace.type == "bar" and trace.y is not None:
            r, c = _cell(trace)
            tops[(r, c)] = max([tops.get((r, c), 0.0)] + [y for y in trace.y if _finite(y)])
    fig.update_traces(constraintext="none", textfont_size=9, selector=dict(type="bar"))  # values stay readable
    for (r, c), top in tops.items():
        if (r, c) not in ((1, 1), (2, 3)) and top > 0:
            fig.update_yaxes(range=[0, top * 1.35], row=r, col=c)
    # memory on a log axis: a small model's weights (MB) would vanish under a runtime reserve
    # (GB) on a linear one; the bottom segment of each stack is the weights
    lows = [w / 1e9 for w in weights if w > 0]
    if lows and max(totals, default=0) > 0:
        fig.update_yaxes(type="log", range=[math.log10(min(lows)) - 0.3, math.log10(max(totals)) + 0.6],
                         row=2, col=3)
    # the panel's title names the price list; the axis title stays short enough not to clip
    fig.update_yaxes(title_text="fleet $/hour" if fleet else "$/hour", row=1, col=2)
    fig.update_yaxes(title_text="$ per 1M tokens", row=1, col=3)
    fig.update_yaxes(title_text="ms", row=2, col=1)
    fig.update_yaxes(title_text="ms", row=2, col=2)
    fig.update_yaxes(title_text="GB (log)", row=2, col=3)
    fig.update_xaxes(tickfont=dict(size=10))
    modes = sorted({rec[c].get("sizing_mode", "") for rec in records for c in ("chosen", "baseline")} - {""})
    where = "; ".join(f"{rec['task']}: chosen {rec['chosen']['model']} on {rec['chosen']['gpu']}, "
                      f"baseline {rec['baseline']['model']} on {rec['baseline']['gpu']}" for rec in records)
    met = {c: sum(rec[c]["quality"] >= rec["threshold"] for rec in records) for c in ("chosen", "baseline")}
    engine = f"the sizing engine ({', '.join(modes) or 'roofline'})"
    devices = ", ".join(sorted({rec[c]["gpu"] for rec in records for c in ("chosen", "baseline")}))
    where_modelled = (f"fleet $/hour: the fleet plan's packed devices on price list {_fleet_price_list(fleet)} "
                      f"(modelled);</sup><br><sup>cost, latency and memory modelled by {engine} for the device each task "
                      f"is sized for alone ({devices})" if fleet else
                      f"price, cost, latency and memory modelled by {engine} for the device each side is "
                      "sized for")
    fig.update_layout(
        title=dict(text=(f"Right-sized deployment vs one big model for every task: chosen meets "
                         f"{met['chosen']}/{len(records)} bars, baseline {met['baseline']}/{len(records)}"
                         f"<br><sup>quality measured by the evaluate step; {where_modelled}</sup>")),
        barmode="stack", template="plotly_white", height=880, margin=dict(t=130 if fleet else 110, b=170),
        # room for each bar's value: a bar and its neighbour's numbers must not overlap
        width=max(1200, 3 * 2 * 58 * (len(records) + 1) + 160),
        legend=dict(orientation="h", y=-0.08), uniformtext=dict(minsize=10, mode="show"),
        annotations=list(fig.layout.annotations) + [dict(
            text=_wrap(where, 170, 4), xref="paper", yref="paper", x=0, y=-0.19, showarrow=False,
            align="left", xanchor="left", font=dict(size=10))])
    return fig


# --------------------------------------------------------------------------- the run's report


def _selection_from_record(rec: dict) -> Selection:
    """Enough of a :class:`Selection` (the ladder's results) to draw a record's ladder."""
    tried = [RungResult(**r) for r in rec.get("ladder", [])]
    chosen = next((r for r in tried if r.passed), None)
    return Selection(task=rec["task"], metric=rec.get("metric", ""), threshold=rec["threshold"],
                     decision_rule=rec.get("decision_rule", "point"), order=[], tried=tried,
                     chosen=chosen,
                     latency={chosen.candidate: rec["chosen"].get("measured_here") or {}} if chosen else {})


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


# The sizing engine's option fields as table columns: modelled values, money in USD.
RANKING_NAMES = {"ttft_ms": "modelled_ttft_ms", "tpot_ms": "modelled_tpot_ms",
                 "throughput_tokens_per_s": "modelled_throughput_tokens_per_s",
                 "price_per_hour": "price_usd_per_hour",
                 "cost_per_1m_output_tokens": "cost_usd_per_1m_output_tokens",
                 "memory_bytes": "modelled_memory_bytes", "mode": "sizing_mode"}


def ranking_rows(rows: list[dict]) -> list[dict]:
    """The device ranking (``Recommendation.to_rows()``) with column names that say what
    they hold (modelled, USD); values rounded to what a reader compares."""
    out = []
    for r in rows:
        row = {RANKING_NAMES.get(k, k): v for k, v in r.items()}
        for k, digits in (("modelled_ttft_ms", 3), ("modelled_tpot_ms", 4), ("price_usd_per_hour", 4),
                          ("cost_usd_per_1m_output_tokens", 6), ("modelled_throughput_tokens_per_s", 1)):
            if _finite(row.get(k)):
                row[k] = round(row[k], digits)
        out.append(row)
    return out


_CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1400px}
table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;white-space:nowrap}th{background:#f3f3f3}
section{border-top:2px solid #264653;margin-top:2em}.scroll{overflow-x:auto}"""

PRECISION_COLUMNS = ["precision", "backend", "mixed", "skip_precision", "status", "score", "delta",
                     "memory_bytes", "memory_ratio", "decode_tokens_per_s", "passed", "kept", "reason"]
GPU_COLUMNS = ["rank", "option", "feasible", "modelled_ttft_ms", "modelled_tpot_ms",
               "modelled_throughput_tokens_per_s", "price_usd_per_hour", "cost_usd_per_1m_output_tokens",
               "modelled_memory_bytes", "sizing_mode", "reason"]


PLACEMENT_COLUMNS = ["model", "tasks", "precision", "batch", "busy_fraction", "busy_per_replica",
                     "weights_gib", "kv_gib", "activations_gib", "shared_ttft_ms", "slo_ttft_ms",
                     "shared_tpot_ms", "slo_tpot_ms", "meets_slo_sharing"]


def placement_rows(group: dict) -> list[dict]:
    """The models of one fleet group (``to_dict`` form): busy fraction (whole traffic on one
    device, and per replica), memory split per device (GiB) and the worst-case latency while
    sharing the device against each model's SLO."""
    return [{"model": m["model"], "tasks": ", ".join(m["tasks"]), "precision": m["precision"],
             "batch": m["batch"], "busy_fraction": _num(m["busy_fraction"], 3),
             "busy_per_replica": _num(m["busy_per_replica"], 3),
             "weights_gib": _num(m["memory"]["weights_bytes"] / 2**30, 3),
             "kv_gib": _num(m["memory"]["kv_bytes"] / 2**30, 3),
             "activations_gib": _num(m["memory"]["activation_bytes"] / 2**30, 3),
             "shared_ttft_ms": _num(m["ttft_shared_ms"], 2), "slo_ttft_ms": m["slo"]["ttft_ms"],
             "shared_tpot_ms": _num(m["tpot_shared_ms"], 3), "slo_tpot_ms": m["slo"]["tpot_ms"],
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
            + (f" (saving {saving:.0%})" if _finite(saving) else "")
            + f": both packed on price list {_fleet_price_list(fleet)}, headroom {fleet['headroom']:g}, "
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
    parts.append("</section>")
    return parts


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
                f"of {m['slo']['ttft_ms']:g} ms, TPOT {m['tpot_shared_ms']:.2f} of {m['slo']['tpot_ms']:g} ms)")
        base = next((bg for bg in (fleet.get("baseline") or {}).get("groups", [])
                     for bm in bg["models"] if task in bm["tasks"]), None)
        tail = f" The baseline fleet serves it from {base['label']} x{base['replicas']}." if base else ""
        return (f'<p class="placement">Placed in fleet group <a href="#{html.escape(_group_id("chosen", g))}">'
                f"{html.escape(g['name'])}</a> on {html.escape(text)}.{html.escape(tail)}</p>")
    return '<p class="placement">Not placed in the fleet plan.</p>'


def decision_report_html(records: list[dict], title: str = "Rightsizer decision report",
                         endpoint: str = "", fleet: dict | None = None, unsized: list[dict] = (),
                         note: str = "", url: str = "", serve_command: str = "") -> str:
    """One self-contained HTML page for the run: the summary table and payoff chart, then per
    task its decision, why nothing smaller, the ladder, latency vs the baseline, the precision
    table and the device ranking. plotly.js is inlined once; every chart reuses it.

    ``fleet``: the fleet plan (``FleetPlan.to_dict()``). With it the payoff chart's $/hour is
    the fleets', a "Fleet plan" section shows both fleets (totals, charts, every group: its
    device, replicas, models with busy fraction, memory split and SLO while sharing), and
    each task says in which group its model was placed.

    ``unsized``: the tasks no candidate could size (``rightsizer.unsized.unsized_entry``): a
    row in the summary table and a section each (the ladder's summary, what would be needed,
    the ladder chart). ``note``: what that did to the deployment
    (``rightsizer.unsized.missing_message``), shown under the title. ``url``: what a client
    calls; ``serve_command``: offline, the command that serves the run's models there."""
    import plotly.io as pio

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
        task = html.escape(rec["task"])
        parts.append(f'<section id="task-{task}"><h2>Task {task}</h2>')
        parts.append(f"<p>{html.escape(rec.get('summary', ''))}</p>")
        if fleet:
            parts.append(_placed(fleet, rec["task"]))
        why = rec.get("why_not_smaller") or []
        if why:
            parts.append("<h3>Why not smaller</h3><ul>"
                         + "".join(f"<li>{html.escape(w)}</li>" for w in why) + "</ul>")
        baseline = {"model": rec["baseline"]["model"], "params": rec["baseline"]["params"],
                    "quality": rec["baseline"]["quality"]}
        if rec.get("ladder"):
            parts += ["<h3>Selection ladder</h3>",
                      chart(ladder_figure(_selection_from_record(rec), baseline), f"ladder-{i}")]
        lat = {f"{c} {rec[c]['model']}": rec[c].get("measured_by_batch") or rec[c].get("measured_here")
               for c in ("chosen", "baseline") if rec[c].get("measured_by_batch") or rec[c].get("measured_here")}
        if lat:
            parts += ["<h3>Latency measured, chosen vs baseline</h3>",
                      chart(latency_figure(rec["task"], lat), f"latency-{i}")]
        ranking = ranking_rows(rec.get("gpu_options") or [])
        parts += ["<h3>Precision search</h3>", _html_table(rec.get("precision_search") or [], None),
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
