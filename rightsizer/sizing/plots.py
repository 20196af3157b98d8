"""Plotly roofline chart: each device's roofline, with prefill and decode as points on it."""

from __future__ import annotations

from typing import Any, Iterable

from rightsizer.precisions import get_precision
from rightsizer.sizing.catalog import default_catalog
from rightsizer.sizing.estimate import Estimate, unique_deployments

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
# Under this share of its roof a point is not limited by compute or bandwidth: the fixed
# per-step overhead (kernel launches, host) takes most of the time.
OVERHEAD_SHARE = 0.5


def bound_at(arithmetic_intensity: float, achieved_flops: float, peak_flops: float,
             bandwidth: float) -> tuple[str, float]:
    """What limits a point, read from where it sits: ``overhead`` when it reaches under
    :data:`OVERHEAD_SHARE` of the roof above it, else ``compute`` right of the ridge and
    ``memory`` left of it. Returns (bound, share of the roof reached)."""
    roof = min(peak_flops, arithmetic_intensity * bandwidth)
    share = achieved_flops / roof if roof > 0 else 0.0
    if share < OVERHEAD_SHARE:
        return "overhead", share
    return ("compute" if arithmetic_intensity * bandwidth >= peak_flops else "memory"), share


def _estimates(source: Any, limit: int) -> tuple[list[Estimate], Estimate | None]:
    """The estimates to draw (first of each deployment, at most ``limit``) and the chosen one."""
    chosen = None
    if isinstance(source, Estimate):
        return [source], source
    if hasattr(source, "options"):  # a Recommendation: its chosen option first
        chosen = getattr(getattr(source, "chosen", None), "estimate", None)
        ests = [o.estimate for o in source.options if o.estimate is not None and o.fits]
        if chosen is not None:
            ests = [chosen] + [e for e in ests if e is not chosen]
    else:
        ests = list(source)
    return unique_deployments(ests)[:limit], chosen


def _device_label(e: Estimate, gpu) -> str:
    return gpu.label if e.count == 1 else f"{e.count}x {gpu.label}"


def roofline_figure(source: Estimate | Iterable[Estimate] | Any, limit: int = 6, catalog=None,
                    model: str | None = None):
    """A log-log roofline per device (attainable FLOP/s vs arithmetic intensity, drawn exactly:
    the bandwidth slope up to the ridge, then the flat compute peak) with each option's
    prefill (circle) and decode (diamond) at their modelled FLOP/s, in the device's colour.

    ``source``: a Recommendation (its chosen option is highlighted, the rest faded), one
    Estimate or several. ``model`` names the model in the title (default: the estimate's
    architecture name). Each point's hover names its bound as read from where it sits
    (:func:`bound_at`).
    """
    import plotly.graph_objects as go

    catalog = catalog or default_catalog()
    ests, chosen = _estimates(source, limit)
    fig = go.Figure()
    points = []
    for e in ests:
        gpu = catalog.get(e.gpu)
        if e.mig:
            gpu = gpu.slice(e.mig)
        compute = get_precision(e.precision).compute
        peak = gpu.peak_flops(compute) or gpu.peak_flops("fp16")
        points.append((e, gpu, compute, peak))
    ais = [p.arithmetic_intensity for e, *_ in points for p in (e.prefill, e.decode)]
    ridges = [peak / gpu.memory_bandwidth for _, gpu, _, peak in points]
    lo = min(ais + ridges, default=1.0) / 10
    hi = max(ais + ridges, default=1.0) * 10
    devices: dict[str, str] = {}
    for e, gpu, compute, peak in points:
        dev = f"{_device_label(e, gpu)} {e.precision}"
        color = devices.setdefault(dev, PALETTE[len(devices) % len(PALETTE)])
        is_chosen = chosen is None or e is chosen
        opacity = 1.0 if is_chosen else 0.35
        ridge = peak / gpu.memory_bandwidth
        fig.add_trace(go.Scatter(
            x=[lo, ridge, hi], y=[lo * gpu.memory_bandwidth, peak, peak], mode="lines",
            line=dict(color=color, width=3 if is_chosen else 1.5, dash="solid" if is_chosen else "dash"),
            opacity=opacity, name=dev + (" (chosen)" if is_chosen and chosen is not None else ""),
            legendgroup=dev,
            hovertemplate=(f"{dev} roof ({compute})<br>peak %{{y:.3s}}FLOP/s, ridge {ridge:.0f} FLOP/B"
                           "<extra></extra>")))
        for phase, symbol in ((e.prefill, "circle"), (e.decode, "diamond")):
            bound, share = bound_at(phase.arithmetic_intensity, phase.achieved_flops, peak,
                                    gpu.memory_bandwidth)
            fig.add_trace(go.Scatter(
                x=[phase.arithmetic_intensity], y=[phase.achieved_flops], mode="markers",
                marker=dict(symbol=symbol, size=15 if is_chosen else 10, color=color,
                            line=dict(color="black", width=2 if is_chosen and chosen is not None else 0)),
                opacity=opacity, legendgroup=dev, showlegend=False, name=f"{dev} {phase.name}",
                hovertemplate=(f"{dev} {phase.name} (batch {e.batch})<br>{bound}-bound: "
                               f"{_pct(share)} of the roof<br>{phase.latency_ms:.3f} ms "
                               f"(overhead {phase.overhead_ms:.3f} ms)<br>AI %{{x:.1f}} FLOP/B, "
                               "%{y:.3s}FLOP/s<extra></extra>")))
    for name, symbol in (("prefill", "circle"), ("decode step", "diamond")):
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=name,
                                 marker=dict(symbol=symbol, size=10, color="#555")))
    if chosen is not None:
        gpu = next(g for e, g, *_ in points if e is chosen)
        peak = next(p for e, _, _, p in points if e is chosen)
        for phase in (chosen.prefill, chosen.decode):
            bound, share = bound_at(phase.arithmetic_intensity, phase.achieved_flops, peak,
                                    gpu.memory_bandwidth)
            fig.add_annotation(x=_log10(phase.arithmetic_intensity), y=_log10(phase.achieved_flops),
                               text=f"chosen {phase.name}: {bound}-bound ({_pct(share)} of roof)",
                               showarrow=True, arrowhead=2, ax=60, ay=-35, font=dict(size=11))
    fig.update_xaxes(type="log", title="arithmetic intensity (FLOP / byte)", range=[_log10(lo), _log10(hi)])
    fig.update_yaxes(type="log", title="FLOP/s per GPU (roof: attainable; points: modelled)")
    name = model or (ests[0].model if ests else "")
    mode = ests[0].mode if ests else ""
    title = f"{name}: roofline of {len(ests)} sized option{'s' if len(ests) != 1 else ''}"
    if chosen is not None:
        title += f", chosen {_device_label(chosen, next(g for e, g, *_ in points if e is chosen))}"
    if ests:
        e = ests[0]
        title += (f"<br><sup>modelled by the sizing engine ({mode}), prompt {e.prompt_tokens} / output "
                  f"{e.output_tokens} tokens; under {OVERHEAD_SHARE:.0%} of the roof a point is "
                  "overhead-bound")
        same = _coincident(chosen or e, ests)
        if same:  # overhead-bound points of different devices land on one spot: say so
            title += f"; {same} other option{'s' if same > 1 else ''}' points sit on the highlighted ones"
        title += "</sup>"
    fig.update_layout(title=dict(text=title), template="plotly_white", legend={"font": {"size": 11}},
                      margin=dict(t=100))
    return fig


def _log10(x: float) -> float:
    import math

    return math.log10(x) if x > 0 else 0.0


def _coincident(ref: Estimate, ests: list[Estimate], tol: float = 0.05) -> int:
    """How many other estimates have both phases within ``tol`` (relative) of ``ref``'s."""
    def near(a: float, b: float) -> bool:
        return abs(a - b) <= tol * max(abs(a), abs(b), 1e-30)

    return sum(all(near(p.arithmetic_intensity, q.arithmetic_intensity) and near(p.achieved_flops, q.achieved_flops)
                   for p, q in ((e.prefill, ref.prefill), (e.decode, ref.decode)))
               for e in ests if e is not ref)


def _pct(share: float) -> str:
    """A share as a percentage with the digits that tell 0.3 % from 0 %."""
    return f"{share:.0%}" if share >= 0.01 else f"{share:.2%}"
