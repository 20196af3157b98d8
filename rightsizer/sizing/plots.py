"""Plotly roofline chart: each GPU's roofline, with prefill and decode as points on it."""

from __future__ import annotations

from typing import Any, Iterable

from rightsizer.precisions import get_precision
from rightsizer.sizing.catalog import default_catalog
from rightsizer.sizing.estimate import Estimate, unique_deployments


def _estimates(source: Any, limit: int) -> list[Estimate]:
    if isinstance(source, Estimate):
        return [source]
    if hasattr(source, "options"):  # a Recommendation
        ests = [o.estimate for o in source.options if o.estimate is not None and o.fits]
    else:
        ests = list(source)
    return unique_deployments(ests)[:limit]


def roofline_figure(source: Estimate | Iterable[Estimate] | Any, limit: int = 12, catalog=None):
    """A log-log roofline (attainable FLOP/s per GPU vs arithmetic intensity) with each
    estimate's prefill and decode plotted at their arithmetic intensity and achieved FLOP/s."""
    import plotly.graph_objects as go

    catalog = catalog or default_catalog()
    ests = _estimates(source, limit)
    fig = go.Figure()
    xs = [10 ** (i / 10) for i in range(-10, 51)]  # 0.1 .. 1e5 FLOP/byte
    drawn = set()
    for e in ests:
        gpu = catalog.get(e.gpu)
        if e.mig:
            gpu = gpu.slice(e.mig)
        compute = get_precision(e.precision).compute
        peak = gpu.peak_flops(compute) or gpu.peak_flops("fp16")
        line_key = (gpu.label, compute)
        if line_key not in drawn:
            drawn.add(line_key)
            fig.add_trace(go.Scatter(
                x=xs, y=[min(peak, x * gpu.memory_bandwidth) for x in xs], mode="lines",
                name=f"{gpu.label} ({compute} roof)", legendgroup=gpu.label,
                hovertemplate="AI %{x:.1f} FLOP/B<br>%{y:.3s}FLOP/s<extra></extra>"))
        for phase, marker in ((e.prefill, "circle"), (e.decode, "diamond")):
            fig.add_trace(go.Scatter(
                x=[phase.arithmetic_intensity], y=[phase.achieved_flops], mode="markers",
                marker={"symbol": marker, "size": 11}, legendgroup=gpu.label,
                name=f"{e.count}x {gpu.label} {e.precision} {phase.name}",
                hovertemplate=(f"{phase.name}: {phase.bound}-bound<br>latency {phase.latency_ms:.2f} ms"
                               "<br>AI %{x:.1f} FLOP/B<br>%{y:.3s}FLOP/s<extra></extra>")))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOP / byte)")
    fig.update_yaxes(type="log", title="FLOP/s (per GPU)")
    title = "Roofline per GPU: prefill (circle) and decode (diamond)"
    if ests:
        title += f" - {ests[0].model}"
    fig.update_layout(title=title, template="plotly_white", legend={"font": {"size": 10}})
    return fig
