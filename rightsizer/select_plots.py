"""The select step's tables and charts: the leaderboard (every rung tried), the selection
ladder and quality against size (the Pareto front), each against the bar and the
one-big-model baseline.

Every chart says where its numbers come from: measured by the select step, on which device.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rightsizer.display import BAR, BASELINE, CHOSEN, FAIL, RUNG_COLORS, rounded
from rightsizer.select import RungResult, Selection


def _params(n: int | float) -> str:
    """Parameter count as a reader says it: 1.2M, 350K, 7.0B."""
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def _device(sel: Selection) -> str:
    """The device the select step measured on (its latency records name it)."""
    devices = sorted({lat.get("device", "") for lat in sel.latency.values() if lat.get("device")})
    return ", ".join(devices) or "this machine"


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
                     "retrieval_recall_at_k": rounded(r.retrieval.get("recall_at_k"), 4),
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


def cascade_figure(sel: Selection) -> go.Figure | None:
    """The ladder's cascade pairs (``ladder.cascade``): for each, the cascade's quality against
    its deferral rate at every candidate threshold of the calibration half (the choice is the
    lowest deferral that clears the bar), and the chosen threshold judged on the confirm half
    (quality with its 95% CI). None when no pair was judged."""
    pairs = (sel.cascade or {}).get("pairs") or []
    if not pairs:
        return None
    fig = go.Figure()
    for pair in pairs:
        name = f"{pair['small']} -> {pair['big']}"
        curve = pair.get("curve") or []
        fig.add_scatter(x=[p["deferral_rate"] for p in curve], y=[p["quality"] for p in curve],
                        mode="lines+markers", marker=dict(size=5), line=dict(shape="hv"),
                        name=f"{name}: calibration half (n={pair['n_calibration']})",
                        customdata=[p["threshold"] for p in curve],
                        hovertemplate=("defer below confidence %{customdata:.4f}<br>deferral %{x:.1%}<br>"
                                       f"{sel.metric} %{{y:.3f}}<extra></extra>"))
        if pair.get("threshold") is not None:
            fig.add_scatter(x=[pair["deferral_rate"]], y=[pair["quality"]], mode="markers",
                            marker=dict(symbol="star", size=16, color=CHOSEN if pair["meets_bar"] else FAIL,
                                        line=dict(color="black", width=1)),
                            error_y=dict(type="data", symmetric=False, array=[pair["ci_high"] - pair["quality"]],
                                         arrayminus=[pair["quality"] - pair["ci_low"]]),
                            name=(f"{name}: threshold {pair['threshold']:.4f} on the confirm half "
                                  f"(n={pair['n_confirm']}){'' if pair['meets_bar'] else ', misses the bar'}"),
                            hovertemplate=f"confirm half<br>deferral %{{x:.1%}}<br>{sel.metric} %{{y:.3f}}<extra></extra>")
    fig.add_hline(y=sel.threshold, line_dash="dash", line_color=BAR, annotation_text=f"bar {sel.threshold}")
    fig.update_layout(title=f"{sel.task}: confidence cascade, quality against the share deferred to the bigger model",
                      xaxis=dict(title="deferral rate (share answered by the bigger model)", tickformat=".0%",
                                 range=[-0.02, 1.02]),
                      yaxis=dict(title=sel.metric, range=[0, 1.05]), legend=dict(orientation="h", y=-0.25))
    return fig
