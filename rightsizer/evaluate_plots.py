"""The evaluate step's chart: latency measured against batch size (the size_gpu step draws
the chosen model beside the baseline with it)."""

from __future__ import annotations

import math

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rightsizer.display import BASELINE, CHOSEN, FADED, RUNG_COLORS


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
