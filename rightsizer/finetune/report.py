"""Training curves as a Plotly figure (loss and learning rate per optimizer step)."""

from __future__ import annotations


def curves_figure(result: dict, title: str | None = None):
    """Loss (left axis) and learning rate (right axis) against the step."""
    import plotly.graph_objects as go

    losses = result.get("losses") or []
    lrs = result.get("learning_rates") or []
    steps = list(range(1, len(losses) + 1))
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=steps, y=losses, name="loss", mode="lines+markers"))
    fig.add_trace(go.Scatter(x=steps[:len(lrs)], y=lrs, name="learning rate", yaxis="y2",
                             mode="lines", line={"dash": "dot"}))
    fig.update_layout(
        title=title or f"LoRA fine-tune of {result.get('model', '')} "
                       f"({result.get('strategy', '')}, {result.get('world_size', 1)} process(es))",
        xaxis={"title": "optimizer step"}, yaxis={"title": "training loss"},
        yaxis2={"title": "learning rate", "overlaying": "y", "side": "right"},
        legend={"orientation": "h"})
    return fig
