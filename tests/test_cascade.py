"""The confidence cascade's choice (rightsizer.cascade): a threshold chosen on one half of the
eval split, judged on the other, priced against the big model alone."""

from __future__ import annotations

import random

import pytest

from rightsizer import cascade, tasktypes
from rightsizer.errors import ConfigError
from rightsizer.tasktypes.base import Predictions
from rightsizer.taskspec import task_from_dict


def _pair(n=200, seed=1, small_right_when_sure=0.97, small_right_when_unsure=0.4, sure_share=0.7):
    """A small model that is right when it is sure and often wrong when not, a big one right
    on all but a few: the situation a cascade is for."""
    rng = random.Random(seed)
    gold, small, big, conf = [], [], [], []
    for _ in range(n):
        g = rng.choice(["a", "b"])
        other = "b" if g == "a" else "a"
        sure = rng.random() < sure_share
        c = rng.uniform(0.85, 0.99) if sure else rng.uniform(0.5, 0.7)
        right = rng.random() < (small_right_when_sure if sure else small_right_when_unsure)
        gold.append(g)
        small.append(g if right else other)
        big.append(g if rng.random() < 0.97 else other)
        conf.append(c)
    return gold, small, big, conf


def test_the_threshold_is_chosen_on_one_half_and_judged_on_the_other():
    gold, small, big, conf = _pair()
    r = cascade.judge("tiny-s", "tiny-l", gold, small, big, conf, "accuracy", ["a", "b"], bar=0.9,
                      decision_rule="point")
    assert r.n_calibration == r.n_confirm == 100
    assert r.threshold is not None and r.threshold < 0.85  # a sure answer is never deferred
    assert r.calibration_quality >= 0.9
    # the lowest deferral that clears the bar: one step less deferral misses it on the calibration half
    calib, _ = cascade.split_halves(len(gold))
    cg, cs, cb, cc = ([x[i] for i in calib] for x in (gold, small, big, conf))
    lower = [t for t in cascade.candidate_thresholds(cc) if t < r.threshold][-1]
    answers, _ = cascade.mix(cs, cb, cc, lower)
    assert sum(a == g for a, g in zip(answers, cg)) / len(cg) < 0.9
    assert 0.0 < r.deferral_rate < 1.0 and r.meets_bar and r.quality >= 0.9
    assert r.ci_low <= r.quality <= r.ci_high
    assert r.small_quality_kept > 0.9 and r.big_quality_deferred > 0.9
    # the small model alone misses the bar; the cascade is what passes
    assert sum(s == g for s, g in zip(small, gold)) / len(gold) < 0.9


def test_a_tolerance_keeps_the_big_models_quality_on_the_calibration_half_not_just_the_bar():
    """The lowest deferral that only just clears the bar there would clear it on the confirm
    half about half the time; within the task's tolerance of the big model it has a margin."""
    gold, small, big, conf = _pair()
    just = cascade.judge("s", "l", gold, small, big, conf, "accuracy", ["a", "b"], bar=0.9, decision_rule="point")
    kept = cascade.judge("s", "l", gold, small, big, conf, "accuracy", ["a", "b"], bar=0.9, decision_rule="point",
                         tolerance=0.02)
    calib, _ = cascade.split_halves(len(gold))
    big_cal = sum(big[i] == gold[i] for i in calib) / len(calib)
    assert kept.calibration_target == pytest.approx(max(0.9, big_cal - 0.02)) and just.calibration_target == 0.9
    assert kept.calibration_quality >= kept.calibration_target
    assert kept.deferral_rate >= just.deferral_rate and kept.quality >= just.quality
    loose = cascade.judge("s", "l", gold, small, big, conf, "accuracy", ["a", "b"], bar=0.9, decision_rule="point",
                          tolerance=1.0)
    assert loose.threshold == just.threshold  # never below the bar


def test_the_threshold_never_sits_on_a_confidence():
    """Another CPU computes a confidence a few ulps off: no example may flip sides."""
    gold, small, big, conf = _pair(seed=3)
    calib, _ = cascade.split_halves(len(gold))
    t, _, _ = cascade.choose_threshold([gold[i] for i in calib], [small[i] for i in calib],
                                       [big[i] for i in calib], [conf[i] for i in calib],
                                       "accuracy", ["a", "b"], 0.9)
    nearest = min(abs(c - t) for c in conf)
    assert nearest > 1e-6
    jittered = [c * (1 + 1e-9) for c in conf]
    assert cascade.mix(small, big, conf, t) == cascade.mix(small, big, jittered, t)


def test_no_threshold_clears_an_unreachable_bar_and_it_is_not_chosen():
    gold, small, big, conf = _pair()
    r = cascade.judge("s", "l", gold, small, big, conf, "accuracy", ["a", "b"], bar=0.999)
    assert r.threshold is None and not r.meets_bar and r.deferral_rate == 1.0
    assert not cascade.priced(r, 0.01, 0.05).chosen


def test_the_cascade_is_chosen_only_when_it_costs_less_than_the_big_model_alone():
    gold, small, big, conf = _pair()
    r = cascade.judge("s", "l", gold, small, big, conf, "accuracy", ["a", "b"], bar=0.9, decision_rule="point")
    cheap = cascade.priced(r, small_cost_per_1m=0.002, big_cost_per_1m=0.01)
    assert cheap.cost_per_1m_tokens == pytest.approx(0.002 + r.deferral_rate * 0.01)
    assert cheap.cheaper and cheap.chosen
    dear = cascade.priced(cascade.judge("s", "l", gold, small, big, conf, "accuracy", ["a", "b"], bar=0.9,
                                        decision_rule="point"), small_cost_per_1m=0.01, big_cost_per_1m=0.01)
    assert not dear.cheaper and not dear.chosen


def test_a_split_too_small_to_halve_is_refused_by_name():
    with pytest.raises(ConfigError, match="at least 20 eval examples"):
        cascade.split_halves(10)


def test_classification_confidence_is_the_answers_class_probability():
    spec = task_from_dict({
        "name": "t", "type": "classification", "dataset": {"train": "x.jsonl", "eval": "y.jsonl"},
        "input_field": "text", "label_field": "label", "prompt": "{text}", "metric": "accuracy",
        "threshold": 0.5, "slo": {"ttft_ms": 100, "tpot_ms": 10}, "candidates": ["m"], "labels": ["a", "b"]})
    pred = Predictions(answers=["a", "b"], option_scores=[[0.0, -2.0], [-1.0, -1.0]], seconds=0.0)
    conf = tasktypes.get("classification").confidence(spec, pred)
    assert conf[0] == pytest.approx(1 / (1 + 2.718281828 ** -2)) and conf[1] == pytest.approx(0.5)
    assert tasktypes.get("generation").confidence(spec, pred) is None  # not asked for: no token log-probabilities


def test_free_text_confidence_is_the_answers_mean_token_probability_and_0_when_malformed():
    import math

    spec = task_from_dict({
        "name": "t", "type": "extraction", "dataset": {"train": "x.jsonl", "eval": "y.jsonl"},
        "input_field": "text", "label_field": "answer", "prompt": "{text}", "metric": "exact_match",
        "threshold": 0.5, "slo": {"ttft_ms": 100, "tpot_ms": 10}, "candidates": ["m"],
        "extraction": {"format": "key_value", "fields": {"order": {"pattern": "[0-9]+"}}}})
    pred = Predictions(answers=["order: 123", "the order is 123"], option_scores=None, seconds=0.0,
                       answer_logprobs=[-0.1, -0.1])
    assert tasktypes.get("generation").confidence(spec, pred) == pytest.approx([math.exp(-0.1)] * 2)
    assert tasktypes.get("extraction").confidence(spec, pred) == pytest.approx([math.exp(-0.1), 0.0])


def _selection_with(pairs: list[dict], kept, spec):
    from rightsizer.select import RungResult, Selection

    big = RungResult(candidate="demo:tiny-m", params=600_000, rung="zero_shot", score=0.95, ci_low=0.9,
                     ci_high=0.99, value=0.95, threshold=spec.threshold, passed=True, n=80, seconds=1.0)
    return Selection(task=spec.name, metric=spec.metric, threshold=spec.threshold, decision_rule="point",
                     order=[("demo:tiny-s", 150_000), ("demo:tiny-m", 600_000)], tried=[big], chosen=big,
                     cascade={"pairs": pairs, "kept": kept, "reason": "" if kept is not None else "none met the bar"})


def _judged_pair(meets_bar=True, deferral_rate=0.25) -> dict:
    return {"small": "demo:tiny-s", "big": "demo:tiny-m", "metric": "accuracy", "threshold": 0.6,
            "deferral_rate": deferral_rate, "quality": 0.93, "ci_low": 0.86, "ci_high": 0.98,
            "small_quality_kept": 0.95, "big_quality_deferred": 0.87, "calibration_quality": 0.92,
            "calibration_deferral_rate": 0.27, "n_calibration": 40, "n_confirm": 40, "meets_bar": meets_bar,
            "small_params": 150_000, "small_rung": "zero_shot", "big_params": 600_000, "big_rung": "zero_shot",
            "small_model_dir": "/nowhere", "small_shots": []}


def test_size_gpu_prices_the_kept_pair_against_the_chosen_model_alone(demo_models, routing_spec):
    """The small model is sized from its candidate ref (analytic sizing, any CPU); the cascade
    is chosen when it meets the bar and small-for-all plus big-for-the-deferred-share costs
    less than the big model alone; the record and its summary line carry it."""
    from rightsizer.records import DecisionRecord
    from rightsizer.size_gpu import price_cascade

    sel = _selection_with([_judged_pair()], 0, routing_spec)
    small_cost = price_cascade(routing_spec, sel, 1e9)["small_side"]["cost_per_1m_tokens"]
    assert small_cost > 0
    dear = price_cascade(routing_spec, sel, big_cost_per_1m=100 * small_cost)
    (pair,) = dear["pairs"]
    assert dear["chosen"] and pair["chosen"] and pair["cheaper"]
    assert pair["cost_per_1m_tokens"] == pytest.approx(small_cost + 0.25 * 100 * small_cost)
    assert "defers 25.0%" in dear["line"] and "(chosen)" in dear["line"]
    cheap = price_cascade(routing_spec, sel, big_cost_per_1m=small_cost)  # small + 25% of big > big
    assert not cheap["chosen"] and "not cheaper" in cheap["line"]
    missed = price_cascade(routing_spec, _selection_with([_judged_pair(meets_bar=False)], 0, routing_spec),
                           big_cost_per_1m=100 * small_cost)
    assert not missed["chosen"] and "misses the bar" in missed["line"]
    none = price_cascade(routing_spec, _selection_with([_judged_pair(meets_bar=False)], None, routing_spec), 1.0)
    assert not none["chosen"] and none["line"] == "no cascade (none met the bar)"
    plain = _selection_with([], None, routing_spec)
    plain.cascade = {}  # ladder.cascade off
    assert price_cascade(routing_spec, plain, 1.0) is None
    record = DecisionRecord.from_dict({"task": "t", "chosen": {"model": "m"}, "cascade": dear})
    assert DecisionRecord.from_dict(record.to_dict()).cascade == dear


def test_the_report_shows_the_cascade_beside_the_chosen_model_alone_and_totals_it_where_chosen(demo_models,
                                                                                                routing_spec):
    from rightsizer.report import summary_rows
    from rightsizer.size_gpu import price_cascade
    from tests.test_fleet import TINY_L, TINY_S, _record

    plain = _record(routing_spec, TINY_S, TINY_L)
    big_cost = plain["chosen"]["cost_per_1m_tokens"]
    with_cascade = {**plain, "cascade": price_cascade(routing_spec, _selection_with([_judged_pair()], 0, routing_spec),
                                                      big_cost)}
    assert not with_cascade["cascade"]["chosen"]  # the small model here costs what the chosen one does
    rows, before = summary_rows([with_cascade]), summary_rows([plain])
    assert rows[:len(before)] == before  # chosen, baseline and the totals unchanged
    (row,) = rows[len(before):]
    assert row["choice"] == "cascade (not chosen)" and row["task"] == routing_spec.name
    assert row["model"] == "demo:tiny-s -> demo:tiny-m (defers 25.0%)" and row["quality"] == 0.93
    assert row["cost_usd_per_1m_output_tokens"] == round(with_cascade["cascade"]["pairs"][0]["cost_per_1m_tokens"], 4)
    assert row["params"] == with_cascade["cascade"]["pairs"][0]["small_params"] + plain["chosen"]["params"]
    # chosen, the cascade is what is deployed: the chosen TOTAL counts it, not the model alone
    chosen = {**with_cascade, "cascade": {**with_cascade["cascade"], "chosen": True}}
    rows = summary_rows([chosen])
    total = next(r for r in rows if (r["task"], r["choice"]) == ("TOTAL", "chosen"))
    (row,) = [r for r in rows if r["choice"] == "cascade"]
    assert total["cost_usd_per_1m_output_tokens"] == row["cost_usd_per_1m_output_tokens"]
    assert total["params"] == row["params"] and total["price_usd_per_hour"] == row["price_usd_per_hour"]
    assert [r for r in rows if r["choice"] == "baseline"] == [r for r in before if r["choice"] == "baseline"]
    # the payoff chart: the cascade beside the chosen model alone, quality and cost
    from rightsizer.report import summary_figure

    bars = [t for t in summary_figure([with_cascade]).data if t.legendgroup == "cascade"]
    assert [(t.xaxis, list(t.x[1])) for t in bars] == [("x", ["cascade"]), ("x3", ["cascade"])]
    assert bars[0].y[0] == 0.93 and bars[1].y[0] == with_cascade["cascade"]["pairs"][0]["cost_per_1m_tokens"]
    assert not [t for t in summary_figure([plain]).data if t.legendgroup == "cascade"]


def test_the_fleet_plan_places_both_models_of_a_chosen_cascade_and_deploy_serves_it(demo_models, routing_spec):
    """A chosen cascade: the small model at the task's whole traffic and the big one at the
    deferred share, in one placement (one process, as the cascade engine serves them); the
    group's function spec asks the engine for the cascade."""
    from functions.plan import group_models
    from rightsizer.plan import FleetPlan, plan_fleet
    from rightsizer.size_gpu import price_cascade
    from tests.test_fleet import TINY_L, TINY_S, _record

    plain = _record(routing_spec, TINY_L, TINY_L)  # the chosen model is the big one here
    big_cost = plain["chosen"]["cost_per_1m_tokens"]
    priced_pair = price_cascade(routing_spec, _selection_with([_judged_pair(deferral_rate=0.25)], 0, routing_spec),
                                big_cost)
    assert priced_pair["chosen"]
    priced_pair["small_side"]["config"] = TINY_S
    alone = plan_fleet([plain], baseline=False)
    both = plan_fleet([{**plain, "cascade": priced_pair}], baseline=False)
    assert len(both.groups) == 1  # one process serves both models
    (p,) = both.groups[0].placements
    (p_alone,) = alone.groups[0].placements
    assert p.cascade["model"] == "demo:tiny-s" and p.cascade["deferral_rate"] == 0.25
    assert p.memory_bytes > p_alone.memory_bytes  # both models' weights and caches in the process
    assert p.busy_fraction == pytest.approx(p_alone.busy_fraction * 0.25 + p.cascade["busy_fraction"])
    assert both.throughput_tokens_per_s == alone.throughput_tokens_per_s  # the task's traffic, counted once
    again = FleetPlan.from_dict(both.to_dict())
    assert again.groups[0].placements[0].cascade == p.cascade and again.demands[0].cascade.deferral_rate == 0.25
    (spec,) = both.function_specs()
    assert spec["models"][0]["cascade"] == "demo:tiny-s"
    _, engines = group_models(spec, {routing_spec.name: "/bundle"})
    assert engines[routing_spec.name]["cascade"] is True
    (spec_alone,) = alone.function_specs()
    assert group_models(spec_alone, {routing_spec.name: "/bundle"})[1][routing_spec.name]["cascade"] is False
