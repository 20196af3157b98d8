"""The payoff chart: the chosen deployment beside the one-big-model baseline per task
(quality measured; price, cost, latency and memory modelled), with the fleet plan's $/hour
when there is one."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from rightsizer.display import BAR, BASELINE, CASCADE, CHOSEN, FAIL, finite
from rightsizer.plan.fleet import FleetPlan, plan_json
from rightsizer.records import DecisionRecord, as_record
from rightsizer.report.summary import fleet_price_list, summary_rows
from rightsizer.units import human_bytes


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


def _cell(trace) -> tuple[int, int]:
    """(row, col) of a trace in the 2x3 summary grid, from its axis names."""
    x = int((trace.xaxis or "x")[1:] or 1)
    return (x - 1) // 3 + 1, (x - 1) % 3 + 1


def _ratio(base: float | None, chosen: float | None) -> str:
    if not (finite(base) and finite(chosen)) or not chosen:
        return ""
    r = base / chosen
    return f"{r:.1f}x" if r >= 1 else f"1/{1 / r:.1f}x" if r > 0 else ""


def _cascade_bars(fig: go.Figure, records: list[DecisionRecord]) -> None:
    """A task's kept cascade pair (``ladder.cascade``) beside its chosen model: the confirm
    half's quality and deferral rate, and its cost per 1M output tokens against the chosen
    (big) model alone."""
    kept = [(rec, pair, bool(rec.cascade.get("chosen"))) for rec in records
            if (pair := rec.cascade_pair()) is not None]
    if not kept:
        return
    xs = [[_axis_label(rec.task) for rec, _, _ in kept], ["cascade"] * len(kept)]
    names = [[p["small"], p["big"], "chosen" if chosen else "not chosen"] for _, p, chosen in kept]
    fig.add_bar(x=xs, y=[p["quality"] for _, p, _ in kept], name="cascade (small model first, the chosen one "
                "below its confidence threshold)", legendgroup="cascade", marker_color=CASCADE,
                text=[f"{p['quality']:.3f}<br>defers {p['deferral_rate']:.0%}" for _, p, _ in kept],
                textposition="outside", cliponaxis=False, customdata=names,
                hovertemplate=("%{customdata[0]} then %{customdata[1]} (%{customdata[2]})<br>"
                               "confirm half %{y:.3f}<extra></extra>"), row=1, col=1)
    costs = [p.get("cost_per_1m_tokens") for _, p, _ in kept]
    fig.add_bar(x=xs, y=costs, name="cascade", legendgroup="cascade", showlegend=False, marker_color=CASCADE,
                text=[(f"{y:.4f}" if finite(y) else "n/a")
                      + (f"<br>{_ratio(y, p.get('big_alone_cost_per_1m_tokens'))} of the big alone"
                         if _ratio(y, p.get("big_alone_cost_per_1m_tokens")) else "")
                      for y, (_, p, _) in zip(costs, kept)],
                textposition="outside", cliponaxis=False, customdata=names,
                hovertemplate="%{customdata[0]} then %{customdata[1]} (%{customdata[2]})<br>$%{y:.4f}<extra></extra>",
                row=1, col=3)


def _fleet_side(fleet: dict, side: str) -> dict | None:
    """One side of a fleet plan's ``to_dict``: the plan itself (chosen) or its ``baseline``."""
    return fleet if side == "chosen" else fleet.get("baseline")


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
    fig.add_bar(x=[["fleet plan"], [choice]], y=[cost if finite(cost) else None], name=choice,
                legendgroup=choice, showlegend=False, marker_color=color, textposition="outside",
                cliponaxis=False, text=[text], customdata=[hover],
                hovertemplate=f"{choice} fleet<br>%{{customdata}}<extra></extra>", row=1, col=2)


def summary_figure(records: Sequence[DecisionRecord | Mapping[str, Any]],
                   fleet: FleetPlan | Mapping[str, Any] | None = None) -> go.Figure:
    """The payoff: chosen deployment beside the one-big-model baseline, per task.

    First quality against each task's bar (measured; a bar the model misses is marked), then
    $/hour and cost per 1M output tokens (with the all-task total), modelled time per output
    token and time to first token, and memory split into weights, KV cache + activations and
    the runtime reserve (modelled, for the device each side is sized for). Each baseline bar
    says how many times the chosen one it is.

    ``records``: :class:`~rightsizer.records.DecisionRecord` or their JSON. ``fleet``: the
    fleet plan (or its ``to_dict()``, the plan step's ``fleet_plan`` JSON). With it the $/hour
    panel is what is deployed: the chosen fleet beside the baseline fleet, both packed by the
    plan on its price list, instead of each task priced alone.
    """
    records = [as_record(r) for r in records]
    fleet = plan_json(fleet) if fleet else None
    rows = summary_rows(records)
    per = {(r["task"], r["choice"]): r for r in rows}
    tasks = [_axis_label(r.task) for r in records]
    price_title = (f"fleet $/hour (fleet plan, {fleet_price_list(fleet)}, modelled)" if fleet
                   else "price ($/hour, modelled)")
    fig = make_subplots(rows=2, cols=3, vertical_spacing=0.2, horizontal_spacing=0.07, subplot_titles=(
        "quality vs the task's bar (measured)", price_title,
        "cost per 1M output tokens ($, modelled)", "time per output token (ms, modelled)",
        "time to first token (ms, modelled)", "memory (GB, modelled)"))

    def pair(choice: str, with_total: bool = False) -> list[list[str]]:
        xs = tasks + (["all tasks"] if with_total else [])
        return [xs, [choice] * len(xs)]

    for choice, color in (("chosen", CHOSEN), ("baseline", BASELINE)):
        recs = [getattr(rec, choice) for rec in records]
        # quality: a bar that misses its threshold is red and says so
        q = [d.quality for d in recs]
        meets = [d.quality >= rec.threshold for d, rec in zip(recs, records)]
        other = "baseline" if choice == "chosen" else "chosen"
        fig.add_bar(x=[[tasks[0]], [choice]], y=[None], name=f"{choice} deployment", legendgroup=choice,
                    marker_color=color, row=1, col=1)  # a plain legend swatch: the quality bars below may be hatched
        fig.add_bar(
            x=pair(choice), y=q, name=choice, legendgroup=choice, marker_color=color, showlegend=False,
            marker_line=dict(color=[color if m else FAIL for m in meets], width=[0 if m else 3 for m in meets]),
            marker_pattern_shape=["" if m else "x" for m in meets],
            text=[f"{v:.3f}" + ("" if m else " ✗ misses bar")
                  + (f"<br>{_ratio(d.params, getattr(records[i], other).params)} params"
                     if choice == "baseline" else "")
                  for i, (v, m, d) in enumerate(zip(q, meets, recs))],
            textposition="outside", cliponaxis=False,
            customdata=[[d.model, d.rung, d.precision, "quality" if rec.metric is None else rec.metric]
                        for d, rec in zip(recs, records)],
            hovertemplate=("%{customdata[0]} (%{customdata[1]}, %{customdata[2]})<br>"
                           "%{customdata[3]} %{y:.3f}<extra></extra>"), row=1, col=1)
        money = [(3, "cost_per_1m_tokens", "cost_usd_per_1m_output_tokens", ".4f")]
        if fleet:  # the $/hour panel is what is deployed: the two fleets
            _fleet_bar(fig, fleet, choice, color)
        else:
            money.insert(0, (2, "price_per_hour", "price_usd_per_hour", ".3f"))
        for col, key, total_key, fmt in money:
            ys = [getattr(d, key) for d in recs] + [per[("TOTAL", choice)][total_key]]
            base = [getattr(rec.baseline, key) for rec in records] + [per[("TOTAL", "baseline")][total_key]]
            chos = [getattr(rec.chosen, key) for rec in records] + [per[("TOTAL", "chosen")][total_key]]
            fig.add_bar(x=pair(choice, True), y=ys, name=choice, legendgroup=choice, showlegend=False,
                        marker_color=color, textposition="outside", cliponaxis=False,
                        text=[(f"{y:{fmt}}" if finite(y) else "n/a")
                              + (f"<br>{_ratio(b, c)}" if choice == "baseline" and _ratio(b, c) else "")
                              for y, b, c in zip(ys, base, chos)],
                        customdata=[d.gpu for d in recs] + ["all tasks"],
                        hovertemplate=f"%{{customdata}}<br>$%{{y:{fmt}}}<extra></extra>", row=1, col=col)
        for col, key in ((1, "tpot_ms"), (2, "ttft_ms")):
            ys = [getattr(d, key) for d in recs]
            fig.add_bar(x=pair(choice), y=ys, name=choice, legendgroup=choice, showlegend=False,
                        marker_color=color, textposition="outside", cliponaxis=False,
                        text=[(f"{y:.2f}" if finite(y) else "n/a")
                              + (f"<br>{_ratio(y, getattr(rec.chosen, key))}" if choice == "baseline" else "")
                              for y, rec in zip(ys, records)],
                        customdata=[[d.gpu, d.sizing_mode or ""] for d in recs],
                        hovertemplate=("%{customdata[0]} (%{customdata[1]})<br>%{y:.2f} ms"
                                       "<extra></extra>"), row=2, col=col)
    _cascade_bars(fig, records)
    # the bar each task must clear, drawn across both of its bars
    fig.add_scatter(x=[[t for t in tasks for _ in (0, 1)],
                       [c for _ in records for c in ("chosen", "baseline")]],
                    y=[r.threshold for r in records for _ in (0, 1)], mode="markers",
                    marker=dict(symbol="line-ew", size=44, color=BAR, line=dict(width=3, color=BAR)),
                    name="task's bar (threshold)",
                    hovertemplate="bar %{y:.3g}<extra></extra>", row=1, col=1)
    fig.add_bar(x=[[tasks[0]], ["baseline"]], y=[None], name="misses its bar", marker=dict(
        color="white", line=dict(color=FAIL, width=2), pattern=dict(shape="x", fgcolor=FAIL)), row=1, col=1)
    # memory: stacked components per (task, side)
    xs = [[t for t in tasks for _ in (0, 1)], [c for _ in tasks for c in ("chosen", "baseline")]]
    sides = [getattr(rec, c) for rec in records for c in ("chosen", "baseline")]
    parts = ("weights_bytes", "kv_activation_bytes", "reserve_bytes")
    split = {k: [getattr(d, k) or 0 for d in sides] for k in parts}
    unsplit = [max(0, d.memory_bytes - sum(split[k][i] for k in parts)) for i, d in enumerate(sides)]
    components = [("weights_bytes", "weights", "#264653"),
                  ("kv_activation_bytes", "KV cache + activations", "#8ab17d"),
                  ("reserve_bytes", "runtime reserve", "#d9d9d9")]
    if any(unsplit):  # a record written before the split was recorded: show the rest as such
        split["unsplit"] = unsplit
        components.append(("unsplit", "not split", "#bdbdbd"))
    for key, name, color in components:
        fig.add_bar(x=xs, y=[v / 1e9 for v in split[key]], name=name, legendgroup=name,
                    marker_color=color, customdata=[d.gpu for d in sides],
                    hovertemplate=f"{name}<br>%{{customdata}}<br>%{{y:.3f}} GB<extra></extra>",
                    row=2, col=3)
    totals = [d.memory_bytes / 1e9 for d in sides]
    weights = split["weights_bytes"]
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
            tops[(r, c)] = max([tops.get((r, c), 0.0)] + [y for y in trace.y if finite(y)])
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
    modes = sorted({d.sizing_mode or "" for d in sides} - {""})
    where = "; ".join(f"{rec.task}: chosen {rec.chosen.model} on {rec.chosen.gpu}, "
                      f"baseline {rec.baseline.model} on {rec.baseline.gpu}" for rec in records)
    met = {c: sum(getattr(rec, c).quality >= rec.threshold for rec in records) for c in ("chosen", "baseline")}
    engine = f"the sizing engine ({', '.join(modes) or 'roofline'})"
    devices = ", ".join(sorted({d.gpu for d in sides}))
    where_modelled = (f"fleet $/hour: the fleet plan's packed devices on price list {fleet_price_list(fleet)} "
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
