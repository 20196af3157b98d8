"""The report a user reads: charts (checked on the figure objects, not pixels), the summary
table's TOTAL rows against hand-computed aggregates, and the HTML decision report."""

from __future__ import annotations

import json
from html.parser import HTMLParser

import pytest

from rightsizer.display import json_cells
from rightsizer.evaluate_plots import latency_figure
from rightsizer.report import (
    FLEET_COLUMNS, SUMMARY_COLUMNS, TOTAL_RULES, decision_report_html, summary_figure, summary_rows,
)
from rightsizer.select import RungResult, Selection
from rightsizer.select_plots import ladder_figure, pareto_figure
from rightsizer.size_gpu_tables import ranking_rows


def _side(model, params, rung, precision, quality, price, cost, tput, ttft, tpot, weights, device="cpu"):
    return {"model": model, "params": params, "rung": rung, "precision": precision,
            "gpu": f"L4 {precision}", "quality": quality, "ttft_ms": ttft, "tpot_ms": tpot,
            "memory_bytes": 3_000_000_000, "weights_bytes": weights,
            "kv_activation_bytes": 500_000_000, "reserve_bytes": 3_000_000_000 - 500_000_000 - weights,
            "cost_per_1m_tokens": cost, "price_per_hour": price, "throughput_tokens_per_s": tput,
            "sizing_mode": "default-factors", "replicas": 1,
            "measured_here": {"device": device, "batch": 1, "repeats": 20, "ttft_p50_ms": 10.0,
                              "ttft_p95_ms": 12.0, "tpot_p50_ms": 4.0, "tpot_p95_ms": 5.0 + ttft}}


def _records() -> list[dict]:
    """Two tasks: the baseline misses review_sentiment's bar, meets ticket_routing's."""
    big = ("demo:tiny-l", 4_885_760, "zero_shot", "bf16")
    return [
        {"task": "review_sentiment", "metric": "accuracy", "threshold": 0.85, "decision_rule": "point",
         "slo": {"ttft_ms": 150, "tpot_ms": 40, "throughput_tokens_per_s": 200},
         "chosen": _side("demo:tiny-m", 869_504, "lora", "int4", 1.0, 0.40, 0.006, 15000, 0.5, 0.50, 500_000),
         "baseline": _side(*big, 0.694, 0.80, 0.012, 14000, 0.7, 0.53, 9_800_000),
         "ladder": [], "why_not_smaller": ["demo:tiny-s lora: screened out"], "summary": "rs summary",
         "precision_search": [{"precision": "bf16", "backend": "native", "status": "evaluated",
                               "score": 1.0, "kept": False, "reason": "within tolerance"}],
         "gpu_options": [{"rank": 1, "option": "L4 int4", "feasible": True, "tpot_ms": 0.5,
                          "price_per_hour": 0.4, "mode": "default-factors", "reason": ""}]},
        {"task": "ticket_routing", "metric": "accuracy", "threshold": 0.9, "decision_rule": "point",
         "slo": {"ttft_ms": 100, "tpot_ms": 30, "throughput_tokens_per_s": 600},
         "chosen": _side("demo:tiny-s", 139_584, "zero_shot", "int4", 0.95, 0.20, 0.002, 30000, 0.4, 0.45, 100_000),
         "baseline": _side(*big, 1.0, 0.80, 0.010, 28000, 0.8, 0.60, 9_800_000),
         "ladder": [], "why_not_smaller": [], "summary": "tr summary",
         "precision_search": [], "gpu_options": []},
    ]


def test_total_rows_against_hand_computed_aggregates():
    rows = summary_rows(_records())
    total = {r["choice"]: r for r in rows if r["task"] == "TOTAL"}
    c, b = total["chosen"], total["baseline"]
    assert c["params"] == 869_504 + 139_584
    assert c["price_usd_per_hour"] == pytest.approx(0.60)
    # weighted by the throughput targets 200 and 600 tokens/s, not a plain mean
    assert c["cost_usd_per_1m_output_tokens"] == pytest.approx((0.006 * 200 + 0.002 * 600) / 800, abs=1e-4)
    assert b["cost_usd_per_1m_output_tokens"] == pytest.approx((0.012 * 200 + 0.010 * 600) / 800, abs=1e-4)
    assert c["modelled_ttft_ms"] == 0.5 and c["modelled_tpot_ms"] == 0.5  # max over tasks
    assert c["measured_tpot_p95_ms"] == 5.5
    assert c["modelled_memory_gb"] == pytest.approx(6.0)
    assert c["modelled_throughput_tokens_per_s"] == 45000
    # pass/fail per task, not a mean of two tasks' scores against different bars
    assert c["meets_bar"] == "2/2" and b["meets_bar"] == "1/2" and c["quality"] is None
    assert all(f"{k}: {v}" in c["aggregation"] for k, v in TOTAL_RULES.items())
    per_task = [r for r in rows if r["task"] != "TOTAL"]
    assert [r["meets_bar"] for r in per_task] == [True, False, True, True]
    assert {r["measured_on"] for r in per_task} == {"cpu"}


def test_cost_weights_fall_back_to_modelled_throughput_without_targets():
    recs = _records()
    recs[1]["slo"]["throughput_tokens_per_s"] = 0
    c = next(r for r in summary_rows(recs) if r["task"] == "TOTAL" and r["choice"] == "chosen")
    assert c["cost_usd_per_1m_output_tokens"] == pytest.approx((0.006 * 15000 + 0.002 * 30000) / 45000, abs=1e-4)


def test_summary_columns_say_what_they_hold():
    cols = set(summary_rows(_records())[0]) | {"aggregation"}
    assert cols == set(SUMMARY_COLUMNS)
    money = [c for c in SUMMARY_COLUMNS if "cost" in c or "price" in c]
    assert money and all("usd" in c for c in money)
    # a modelled single value is not called p95; measured p95 columns say so
    assert not any(c.startswith("p95") for c in SUMMARY_COLUMNS)
    assert all(c.startswith(("modelled_", "measured_")) for c in SUMMARY_COLUMNS if c.endswith("_ms"))


def test_json_cells_not_python_repr():
    rows = json_cells([{"a": {"x": 1, "ok": True, "none": None}, "b": [1, "two"], "c": 3}])
    assert json.loads(rows[0]["a"]) == {"x": 1, "ok": True, "none": None}
    assert json.loads(rows[0]["b"]) == [1, "two"] and rows[0]["c"] == 3


def test_summary_figure_leads_with_quality_against_each_bar():
    recs = _records()
    fig = summary_figure(recs)
    price = [t for t in fig.data if t.xaxis == "x2" and t.type == "bar"]
    # no plan: each task priced alone, with the all-task total
    # task names broken after their underscores: neighbouring labels do not run into each other
    assert [list(t.x[0]) for t in price] == [["review_<br>sentiment", "ticket_<br>routing", "all tasks"]] * 2
    assert fig.layout.annotations[1].text == "price ($/hour, modelled)" and fig.layout.yaxis2.title.text == "$/hour"
    titles = [a.text for a in fig.layout.annotations]
    assert titles[0].startswith("quality") and "(measured)" in titles[0]
    assert all("modelled" in t for t in titles[1:6])
    assert any("$/hour" in t for t in titles) and any("1M output tokens ($" in t for t in titles)
    assert "GB" in titles[5] and "ms" in titles[3]
    quality = [t for t in fig.data if t.type == "bar" and t.xaxis == "x" and t.y[0] is not None]
    base = next(t for t in quality if t.name == "baseline")
    # every task present; review_sentiment's baseline misses its bar and is marked
    assert list(base.x[0]) == ["review_<br>sentiment", "ticket_<br>routing"]
    assert "misses bar" in base.text[0] and "misses bar" not in base.text[1]
    assert list(base.marker.pattern.shape) == ["x", ""]
    assert "5.6x params" in base.text[0]  # 4,885,760 / 869,504
    bars = next(t for t in fig.data if t.name and t.name.startswith("task's bar"))
    assert list(bars.y) == [0.85, 0.85, 0.9, 0.9]
    # memory split into weights, KV + activations and reserve, stacked
    assert {t.name for t in fig.data if t.xaxis == "x6" and t.type == "bar"} == {
        "weights", "KV cache + activations", "runtime reserve"}
    # on a log axis whose floor is below the smallest weights: a small model's weights show
    weights = next(t for t in fig.data if t.xaxis == "x6" and t.name == "weights")
    assert fig.layout.yaxis6.type == "log" and 10 ** fig.layout.yaxis6.range[0] < min(weights.y)
    assert fig.layout.width >= 1200
    # cost panel carries the all-task total and the ratio on each baseline bar
    cost = next(t for t in fig.data if t.xaxis == "x3" and t.name == "baseline")
    assert list(cost.x[0])[-1] == "all tasks" and "2.0x" in cost.text[0]
    assert "default-factors" in fig.layout.title.text and "1/2" in fig.layout.title.text
    assert sum(t.showlegend is not False for t in fig.data) <= 8
    assert "%{y:.3f}" in quality[0].hovertemplate


RAW_FLOAT = __import__("re").compile(r"\d\.\d{6,}")  # a float written without a format


def _strings(fig) -> list[str]:
    """Every text a reader sees on a figure: titles, annotations, bar and marker texts, hover templates."""
    out = [fig.layout.title.text or ""] + [a.text or "" for a in fig.layout.annotations]
    for t in fig.data:
        texts = t.text if isinstance(t.text, (list, tuple)) else [t.text]
        out += [str(x) for x in texts if x is not None] + [t.name or "", t.hovertemplate or ""]
    return out


def test_the_payoff_charts_write_no_unformatted_float():
    from rightsizer.plan.plots import fleet_figure

    recs = _records()
    for rec in recs:  # values as a computation leaves them, not rounded
        for side in ("chosen", "baseline"):
            rec[side] = {k: (v + 1 / 3 if isinstance(v, float) else v) for k, v in rec[side].items()}
    from test_fleet import three_tiny

    from rightsizer.plan import plan_fleet

    plan = plan_fleet(three_tiny(), include_cpu=False).to_dict()
    for fig in (summary_figure(recs), summary_figure(recs, plan), fleet_figure(plan), fleet_figure(plan["baseline"])):
        raw = [x for x in _strings(fig) if RAW_FLOAT.search(x)]
        assert not raw, raw


def _selection(with_latency: bool = True) -> Selection:
    def rr(c, p, rung, score, passed, screened=False):
        return RungResult(candidate=c, params=p, rung=rung, score=score, ci_low=score - 0.05,
                          ci_high=min(1.0, score + 0.05), value=score, threshold=0.8,
                          passed=passed, n=20 if screened else 80, seconds=1.0, n_total=80,
                          screened_out=screened, bound=0.7 if screened else None,
                          reason="" if passed else "below")
    tried = [rr("s", 100_000, "zero_shot", 0.5, False, True), rr("s", 100_000, "lora", 0.6, False, True),
             rr("m", 400_000, "zero_shot", 0.85, True)]
    lat = {"device": "cpu", "batch": 1, "repeats": 3, "ttft_p95_ms": 1.0, "tpot_p95_ms": 0.5}
    return Selection(task="review_sentiment", metric="accuracy", threshold=0.8, decision_rule="point",
                     order=[("s", 100_000), ("m", 400_000), ("l", 900_000)], tried=tried,
                     chosen=tried[-1], rungs=["zero_shot", "lora"],
                     latency={"s": lat, "m": {**lat, "tpot_p95_ms": 0.9}} if with_latency else {})


def test_ladder_marks_screened_bars_with_n_and_bound():
    fig = ladder_figure(_selection())
    assert fig.layout.title.text.startswith("review_sentiment") and "measured on cpu" in fig.layout.title.text
    zs = next(t for t in fig.data if t.type == "bar" and t.name == "zero_shot")
    assert "n=20/80" in zs.text[0] and "screened" in zs.text[0] and "n=80/80" in zs.text[1]
    assert list(zs.marker.pattern.shape) == ["/", ""] and zs.marker.opacity[0] < 1
    assert list(zs.marker.line.width) == [0, 3]  # the chosen rung outlined
    bounds = [t for t in fig.data if t.type == "scatter" and t.name == "screening bound"]
    # one mark per screened bar, on its own bar (same offset group), at its bound
    assert sorted((t.offsetgroup, tuple(t.y)) for t in bounds) == [("lora", (0.7,)), ("zero_shot", (0.7,))]
    assert sum(t.showlegend is not False for t in bounds) == 1
    assert fig.layout.scattermode == "group"
    assert fig.layout.yaxis.title.text.startswith("accuracy")
    assert "baseline l not reached" in fig.layout.title.text
    with_base = ladder_figure(_selection(), baseline={"model": "l", "params": 900_000, "quality": 0.7})
    assert [s.y0 for s in with_base.layout.shapes] == [0.8, 0.7]


def test_pareto_names_the_device_and_the_baseline():
    fig = pareto_figure(_selection())
    assert "measured on cpu" in fig.layout.annotations[1].text and "p95 of 3 runs" in fig.layout.annotations[1].text
    pts = fig.data[0]
    assert list(pts.marker.symbol) == ["x", "star"] and list(pts.text) == ["s (lora, n=20)", "m (zero_shot, n=80)"]
    assert pts.cliponaxis is False
    # x range leaves room for labels beside the outermost points (and the baseline's size)
    lo, hi = fig.layout.xaxis.range
    assert 10 ** lo < 100_000 and 10 ** hi > 900_000
    fig = pareto_figure(_selection(), baseline={"model": "l", "params": 900_000, "quality": 0.7})
    base = next(t for t in fig.data if t.name == "one-big-model baseline")
    assert list(base.x) == [900_000] and list(base.y) == [0.7]
    assert len(pareto_figure(_selection(with_latency=False)).layout.annotations) >= 1


def test_latency_puts_chosen_and_baseline_on_one_chart():
    def ms(k: float) -> list[dict]:
        return [{"device": "cpu", "batch": b, "repeats": 20, "ttft_p50_ms": k * b, "ttft_p95_ms": k * b * 1.2,
                 "tpot_p50_ms": k, "tpot_p95_ms": k * 1.1} for b in (1, 4, 16)]
    fig = latency_figure("review_sentiment", {"chosen demo:tiny-m": ms(1.0), "baseline demo:tiny-l": ms(5.0)})
    assert {t.xaxis for t in fig.data if "ttft" not in t.name} == {"x", "x2"}
    ttft = [t for t in fig.data if t.xaxis == "x"]
    assert {t.name for t in ttft} == {"chosen demo:tiny-m p95", "chosen demo:tiny-m p50",
                                      "baseline demo:tiny-l p95", "baseline demo:tiny-l p50"}
    assert len({t.line.color for t in ttft}) == 2
    assert "measured on cpu" in fig.layout.title.text and "20 runs" in fig.layout.title.text
    assert fig.layout.xaxis.title.text.startswith("batch size") and fig.layout.yaxis.title.text == "ms"


class _Sections(HTMLParser):
    """Sections (by id) with their text, links and group blocks; scripts, charts and tables."""

    def __init__(self):
        super().__init__()
        self.sections, self.scripts, self.plots, self.tables = [], 0, 0, 0
        self.text: dict[str, str] = {}
        self.links: dict[str, list[str]] = {}
        self.groups: dict[str, list[str]] = {}  # section id -> ids of its group blocks
        self.library_scripts, self._script = 0, None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        here = self.sections[-1] if self.sections else None
        if tag == "section":
            self.sections.append(a.get("id"))
            self.text[a.get("id")], self.links[a.get("id")] = "", []
        elif tag == "script":
            self.scripts += 1
            self._script = []
        elif tag == "div" and "plotly-graph-div" in (a.get("class") or ""):
            self.plots += 1
        elif tag == "div" and a.get("class") == "group":
            self.groups.setdefault(here, []).append(a.get("id"))
        elif tag == "table":
            self.tables += 1
        elif tag == "a" and here:
            self.links[here].append(a.get("href"))

    def handle_endtag(self, tag):
        if tag == "script" and self._script is not None:
            self.library_scripts += "plotly.js v" in "".join(self._script)[:200]
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self._script.append(data)
        elif self.sections:
            self.text[self.sections[-1]] += data


def test_decision_report_is_one_html_page_with_every_task():
    recs = _records()
    recs[0]["ladder"] = [r.to_dict() for r in _selection().tried]
    page = decision_report_html(recs, endpoint="http://serving/v1")
    p = _Sections()
    p.feed(page)
    assert p.sections == ["task-review_sentiment", "task-ticket_routing"]
    assert page.count("plotly.js v") == 1  # the library inlined once, not once per chart
    # summary + ladder (first task only) + latency per task
    assert p.plots == 4
    assert p.tables == 3  # summary; the first task's precision table and device ranking
    assert "rs summary" in page and "tr summary" in page and "http://serving/v1" in page
    assert "screened out" in page  # why not smaller
    # no plan: no fleet section, no placement line
    assert "Fleet plan" not in page and 'class="placement"' not in page and not p.groups
    assert p.library_scripts == 1


def test_device_ranking_columns_name_units_and_source():
    rows = ranking_rows([{"rank": 1, "option": "L4 int4", "ttft_ms": 0.123456, "tpot_ms": 0.5,
                          "price_per_hour": 0.8, "cost_per_1m_output_tokens": 0.0061234567,
                          "throughput_tokens_per_s": 15000.04, "memory_bytes": 3, "mode": "roofline"}])
    assert rows == [{"rank": 1, "option": "L4 int4", "modelled_ttft_ms": 0.123, "modelled_tpot_ms": 0.5,
                     "price_usd_per_hour": 0.8, "cost_usd_per_1m_output_tokens": 0.006123,
                     "modelled_throughput_tokens_per_s": 15000.0, "modelled_memory_bytes": 3,
                     "sizing_mode": "roofline"}]


def test_fleet_rows_put_the_chosen_fleet_beside_the_baseline_fleet():
    from test_fleet import three_tiny

    from rightsizer.plan import plan_fleet
    from rightsizer.report import fleet_rows

    plan = plan_fleet(three_tiny(), include_cpu=False).to_dict()
    chosen, base = fleet_rows(plan)
    assert (chosen["fleet"], base["fleet"]) == ("chosen", "baseline")
    assert chosen["usd_per_hour"] == round(plan["totals"]["cost_per_hour"], 4)
    assert base["usd_per_hour"] == round(plan["baseline"]["totals"]["cost_per_hour"], 4)
    # memory used (models + one reserve per device), not the devices' capacity
    assert chosen["memory_used_gib"] == round(plan["totals"]["memory_used_bytes"] / 2**30, 3)
    assert chosen["memory_used_gib"] < plan["totals"]["memory_bytes"] / 2**30
    assert all(t in chosen["placement"] for t in ("a", "b", "c")) and chosen["price_list"]
    plan["baseline"], plan["baseline_error"] = None, "baseline: nothing fits"
    assert fleet_rows(plan)[1] == {"fleet": "baseline", "placement": "baseline: nothing fits"}


# --------------------------------------------------------------------------- with the fleet plan


@pytest.fixture(scope="module")
def fleet() -> dict:
    """The fleet plan of _records()'s two tasks as the plan step logs it (JSON): traffic enough
    that the two tiny models take a MIG slice each, and the one big model four slices."""
    from test_fleet import TINY_L, TINY_M, TINY_S, decision

    from rightsizer.plan import plan_fleet

    plan = plan_fleet([decision("review_sentiment", TINY_M, throughput=100_000, baseline=TINY_L),
                       decision("ticket_routing", TINY_S, throughput=100_000, baseline=TINY_L)],
                      include_cpu=False)
    body = json.loads(json.dumps(plan.to_dict()))
    assert len(body["groups"]) == 2 and body["baseline"]["totals"]["devices"] > 2  # what the tests lean on
    return body


def test_summary_figure_puts_the_fleets_dollars_per_hour_side_by_side(fleet):
    fig = summary_figure(_records(), fleet)
    price = {t.name: t for t in fig.data if t.xaxis == "x2" and t.type == "bar"}
    assert set(price) == {"chosen", "baseline"}  # the fleets only, no task priced alone
    chosen, base = fleet["totals"]["cost_per_hour"], fleet["baseline"]["totals"]["cost_per_hour"]
    assert [list(price[c].x[1]) for c in ("chosen", "baseline")] == [["chosen"], ["baseline"]]
    assert list(price["chosen"].y) == [pytest.approx(chosen)] and list(price["baseline"].y) == [pytest.approx(base)]
    # the ratio written on the pair (baseline over chosen), devices on both
    assert f"{base / chosen:.1f}x" in price["baseline"].text[0]
    assert price["chosen"].text[0] == f"${chosen:.3f}/h<br>2 devices"
    assert f"{fleet['baseline']['totals']['devices']} devices" in price["baseline"].text[0]
    # where the numbers come from: the plan's price list, modelled, and the devices sized for
    plist = fleet["price_list"]["name"]
    assert plist in fig.layout.annotations[1].text and "fleet plan" in fig.layout.annotations[1].text
    assert fig.layout.yaxis2.title.text == "fleet $/hour" and plist in fig.layout.title.text
    assert "modelled" in fig.layout.title.text and "L4 int4" in fig.layout.title.text
    # the rest as without a plan: quality first, cost per 1M with the all-task total
    assert fig.layout.annotations[0].text.startswith("quality")
    cost = next(t for t in fig.data if t.xaxis == "x3" and t.name == "baseline")
    assert list(cost.x[0])[-1] == "all tasks" and "2.0x" in cost.text[0]
    # a baseline fleet that could not be planned says so, with no bar
    fleet = {**fleet, "baseline": None, "baseline_error": "nothing fits"}
    lone = next(t for t in summary_figure(_records(), fleet).data if t.xaxis == "x2" and t.name == "baseline")
    assert list(lone.y) == [None] and lone.text[0] == "not planned" and lone.customdata[0] == "nothing fits"


def test_decision_report_shows_the_fleet_and_where_each_task_runs(fleet):
    page = decision_report_html(_records(), fleet=fleet)
    p = _Sections()
    p.feed(page)
    assert p.sections == ["fleet", "task-review_sentiment", "task-ticket_routing"]
    assert p.library_scripts == 1 and page.count("plotly.js v") == 1  # inlined once with two more charts
    assert p.plots == 1 + 2 + 2  # summary, one chart per fleet, latency per task
    text = p.text["fleet"]
    assert "The saving: fleet plan, chosen vs one big model" in text and fleet["price_list"]["name"] in text
    # the fleet comes first, and the per-task view after it says it is not the saving
    assert page.index('id="fleet"') < page.index("Each task sized alone") < page.index('id="summary"')
    assert "Not the saving" in page
    assert all(c in text for c in FLEET_COLUMNS)  # the fleet_rows table
    # every group of both fleets, with its device, replicas, models' busy and memory and SLO
    assert sorted(p.groups["fleet"]) == sorted(
        [f"fleet-chosen-{g['name']}" for g in fleet["groups"]]
        + [f"fleet-baseline-{g['name']}" for g in fleet["baseline"]["groups"]])
    for g in fleet["groups"] + fleet["baseline"]["groups"]:
        assert f"{g['label']} x{g['replicas']}" in text
    assert all(c in text for c in ("busy_per_replica", "weights_gib", "kv_gib", "meets_slo_sharing"))
    for task in ("review_sentiment", "ticket_routing"):
        assert task in text
        group = next(g for g in fleet["groups"] for m in g["models"] if task in m["tasks"])
        # the task's section names its group, links to it, and says the SLO holds while sharing
        assert p.links[f"task-{task}"] == [f"#fleet-chosen-{group['name']}"]
        own = p.text[f"task-{task}"]
        assert f"Placed in fleet group {group['name']} on {group['label']}" in own and "SLO met" in own
        assert "alone on it" in own  # one model per slice in this plan
        assert f"baseline fleet serves it from {fleet['baseline']['groups'][0]['label']}" in own


def test_a_task_sharing_a_device_says_with_whom_and_its_slo_while_sharing():
    from test_fleet import TINY_M, TINY_S, decision

    from rightsizer.plan import plan_fleet

    plan = plan_fleet([decision("review_sentiment", TINY_M), decision("ticket_routing", TINY_S)],
                      include_cpu=False, baseline=False).to_dict()
    (group,) = plan["groups"]
    p = _Sections()
    p.feed(decision_report_html(_records(), fleet=plan))
    own = p.text["task-review_sentiment"]
    assert f"on {group['label']} x1, sharing it with ticket_routing" in own and "SLO met while sharing" in own
    assert "SLO met by every model while sharing" in p.text["fleet"]
    assert "baseline fleet not planned" in p.text["fleet"] and p.groups["fleet"] == [f"fleet-chosen-{group['name']}"]


def _unsized_entry() -> dict:
    """A task no candidate could size: its best rung is full-split, beside a screened-out one."""
    from rightsizer.unsized import unsized_entry

    sel = _selection()
    sel.task, sel.chosen = "order_extraction", None
    sel.tried = [RungResult(**{**r.to_dict(), "passed": False}) for r in sel.tried]
    return unsized_entry(sel)


def test_an_unsized_task_is_a_row_of_the_summary_and_counts_against_the_total():
    entry = _unsized_entry()
    rows = summary_rows(_records(), [entry])
    row = next(r for r in rows if r["task"] == "order_extraction")
    assert row["choice"] == "unsized" and row["meets_bar"] is False and set(row) == set(SUMMARY_COLUMNS) - {"aggregation"}
    # the best rung the ladder found: the full-split one, not a screened-out bar
    assert (row["model"], row["rung"], row["quality"], row["threshold"]) == ("m", "zero_shot", 0.85, 0.8)
    assert row["cost_usd_per_1m_output_tokens"] is None
    assert [r["task"] for r in rows].index("order_extraction") < [r["task"] for r in rows].index("TOTAL")
    totals = {r["choice"]: r for r in rows if r["task"] == "TOTAL"}
    assert totals["chosen"]["meets_bar"] == "2/3" and totals["baseline"]["meets_bar"] == "1/2"
    # the sized tasks' totals are those without the unsized task
    plain = {r["choice"]: r for r in summary_rows(_records()) if r["task"] == "TOTAL"}
    assert totals["chosen"]["cost_usd_per_1m_output_tokens"] == plain["chosen"]["cost_usd_per_1m_output_tokens"]


def test_the_report_shows_an_unsized_task_with_what_would_be_needed_and_the_deployment_note():
    entry = _unsized_entry()
    page = decision_report_html(_records(), unsized=[entry], note="nothing deployed: because")
    p = _Sections()
    p.feed(page)
    assert p.sections == ["task-review_sentiment", "task-ticket_routing", "task-order_extraction"]
    text = p.text["task-order_extraction"]
    assert "not sized" in text and entry["summary"] in text and "Would be needed" in text
    assert all(n in text for n in entry["needs"]) and entry["needs"]
    assert 'id="ladder-unsized-0"' in page and '<p class="missing"><strong>nothing deployed: because' in page
    # no task sized at all: the page still says why, without a payoff chart
    page = decision_report_html([], unsized=[entry], note="nothing deployed")
    p = _Sections()
    p.feed(page)
    assert p.sections == ["task-order_extraction"] and 'id="summary"' not in page


def test_the_printed_summary_gives_an_unsized_task_s_verdict_then_each_need_on_its_own_line():
    from rightsizer.report import unsized_lines

    entry = _unsized_entry()
    lines = unsized_lines([entry])
    assert lines[0].startswith("order_extraction: NO candidate reaches accuracy >= 0.8") and "Would be" not in lines[0]
    assert lines[1:] == [f"   would be needed: {n}" for n in entry["needs"]]
