"""Plotly chart of a fleet plan: how each device's memory and time are shared."""

from __future__ import annotations

import math
from typing import Any

from rightsizer.units import human_bytes
from rightsizer.plan.fleet import FleetPlan, plan_json

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")
GIB = 2**30




def fleet_figure(plan: FleetPlan | dict, title: str | None = None) -> Any:
    """Two panels, one bar per group (one device of it): memory (GiB) stacked as each model's
    weights and KV + activations plus the one runtime reserve, against the device's capacity;
    and time: each model's busy fraction per replica stacked, against the headroom line.

    ``plan``: a :class:`FleetPlan` or its ``to_dict()`` (the ``fleet_plan`` JSON the plan
    step logs), so the report can draw a plan it only has as JSON.
    """
    from plotly.subplots import make_subplots

    # one drawing path, from the JSON form (the JSON holds all the chart needs)
    body = plan_json(plan)
    groups = body["groups"]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("memory per device (GiB)", "busy fraction per replica"),
                        horizontal_spacing=0.12)
    x = [f"{g['name']}<br>{g['label']} x{g['replicas']}" for g in groups]
    names = sorted({m["name"] for g in groups for m in g["models"]})
    colour = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}
    for name in names:
        w, kv, busy = [], [], []
        for g in groups:
            m = next((m for m in g["models"] if m["name"] == name), None)
            mem = m["memory"] if m else {}
            w.append(mem.get("weights_bytes", 0) / GIB)
            kv.append((mem.get("kv_bytes", 0) + mem.get("activation_bytes", 0)) / GIB)
            busy.append(m["busy_per_replica"] if m else 0)
        fig.add_bar(x=x, y=w, name=f"{name}", legendgroup=name, marker_color=colour[name],
                    hovertemplate=f"{name} weights %{{y:.3f}} GiB<extra></extra>", row=1, col=1)
        fig.add_bar(x=x, y=kv, name=f"{name} KV + activations", legendgroup=name, marker_color=colour[name],
                    marker_pattern_shape="/", showlegend=False,
                    hovertemplate=f"{name} KV + activations %{{y:.3f}} GiB<extra></extra>", row=1, col=1)
        fig.add_bar(x=x, y=busy, name=name, legendgroup=name, marker_color=colour[name], showlegend=False,
                    hovertemplate=f"{name} busy %{{y:.3f}}<extra></extra>", row=1, col=2)
    fig.add_bar(x=x, y=[g["reserve_bytes"] / GIB for g in groups], name="runtime reserve (one per device)",
                marker_color="#cccccc", row=1, col=1)
    fig.add_scatter(x=x, y=[g["memory_capacity_bytes"] / GIB for g in groups], mode="markers",
                    marker={"symbol": "line-ew-open", "size": 30, "color": "black"}, name="device memory",
                    row=1, col=1)
    used = [g["memory_used_bytes"] / GIB for g in groups]
    weights = [sum(m["memory"].get("weights_bytes", 0) for m in g["models"]) for g in groups]
    fig.add_scatter(x=x, y=used, mode="text", showlegend=False, hoverinfo="skip", textposition="top center",
                    text=[f"{u:.2f} GiB<br>weights {human_bytes(w, binary=True)}" for u, w in zip(used, weights)], cliponaxis=False,
                    row=1, col=1)
    # a line across the whole panel (a one-group plan's line through one point would be a dot)
    fig.add_hline(y=body["headroom"], line_dash="dash", line_color="red", row=1, col=2,
                  annotation_text=f"headroom {body['headroom']:g}", annotation_position="top left")
    totals = body["totals"]
    head = title or (f"fleet plan ({body['side']}): {totals['devices']} devices, ${totals['cost_per_hour']:.3f}/h, "
                     f"${totals['cost_per_1m_output_tokens']:.4f} per 1M output tokens "
                     f"[{(body.get('price_list') or {}).get('name', '')}, solver {body['solver']}]")
    fig.update_layout(barmode="stack", title=head, legend_title_text="model")
    # memory on a log axis: a small model's weights (MiB) would vanish under the runtime reserve
    # and the device's capacity (GiB) on a linear one
    low = min([m["memory"].get("weights_bytes", 0) / GIB for g in groups for m in g["models"]
               if m["memory"].get("weights_bytes", 0) > 0] or [0.001])
    high = max([g["memory_capacity_bytes"] / GIB for g in groups] + used)
    fig.update_yaxes(title_text="GiB (log)", type="log", range=[math.log10(low) - 0.3, math.log10(high) + 0.4],
                     row=1, col=1)
    fig.update_yaxes(title_text="busy fraction", range=[0, 1.05], row=1, col=2)
    return fig


__all__ = ["fleet_figure"]
