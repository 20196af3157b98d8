"""Evaluation harness: log-likelihood scoring, metrics, CI, latency, bad data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from rightsizer.errors import ConfigError
from rightsizer.evaluate import (bootstrap_ci, build_prompt, evaluate_quality, load_rows,
                                 macro_f1, measure_latency, pick_shots, score_options)
from rightsizer.models import load_model


def test_macro_f1_and_ci_by_hand():
    gold = ["a", "a", "b", "b"]
    pred = ["a", "b", "b", "b"]
    # class a: tp1 fp0 fn1 -> 2/3 ; class b: tp2 fp1 fn0 -> 4/5
    assert macro_f1(gold, pred, ["a", "b"]) == pytest.approx((2 / 3 + 4 / 5) / 2)
    lo, hi = bootstrap_ci(gold, pred, ["a", "b"], "accuracy")
    assert 0.0 <= lo <= 0.75 <= hi <= 1.0


def test_scores_prefer_the_trained_label(demo_models, routing_spec):
    model, tok = load_model("demo:tiny-s")
    rows = load_rows(routing_spec, "eval", 40)
    scores = score_options(model, tok, [build_prompt(routing_spec, r) for r in rows],
                           routing_spec.labels)
    assert scores.shape == (40, 4)
    best = [routing_spec.labels[i] for i in scores.argmax(-1).tolist()]
    assert best == [r["label"] for r in rows]


def test_quality_and_latency(demo_models, sentiment_spec):
    model, tok = load_model("demo:tiny-s")
    rows = load_rows(sentiment_spec, "eval", 60)
    q = evaluate_quality(model, tok, sentiment_spec, rows)
    assert q.n == 60 and 0.3 < q.score < 0.75  # negations defeat the untuned model
    assert q.ci_low <= q.score <= q.ci_high
    lat = measure_latency(model, tok, build_prompt(sentiment_spec, rows[0]), output_tokens=4,
                          repeats=3)
    assert lat.ttft_p50_ms > 0 and lat.tpot_p50_ms > 0
    assert lat.ttft_p95_ms >= lat.ttft_p50_ms and lat.tokens_per_s > 0
    json.dumps(lat.to_dict())


def test_few_shot_examples_cover_labels(routing_spec):
    train = load_rows(routing_spec, "train")
    shots = pick_shots(routing_spec, train, 4)
    assert sorted(s["label"] for s in shots) == sorted(routing_spec.labels)
    with pytest.raises(ConfigError, match="few_shot_k: 999 is larger than the train split"):
        pick_shots(routing_spec, train, 999)


def test_bad_datasets(tmp_path, routing_spec):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    spec = dataclasses.replace(routing_spec, dataset={"train": str(empty), "eval": str(empty)})
    with pytest.raises(ConfigError, match="empty|file not found|no field"):
        load_rows(spec, "eval")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"text": "hi", "label": "refunds"}) + "\n")
    spec = dataclasses.replace(routing_spec, dataset={"train": str(bad), "eval": str(bad)})
    with pytest.raises(ConfigError, match=r"label\(s\) \['refunds'\] are not in labels"):
        load_rows(spec, "eval")
    wrong = tmp_path / "wrong.jsonl"
    wrong.write_text(json.dumps({"body": "hi", "label": "billing"}) + "\n")
    spec = dataclasses.replace(routing_spec, dataset={"train": str(wrong), "eval": str(wrong)})
    with pytest.raises(ConfigError, match=r"no field\(s\) \['text'\]"):
        load_rows(spec, "eval")
    spec = dataclasses.replace(routing_spec, dataset={"train": "x.jsonl", "eval": str(tmp_path / "nope.jsonl")})
    with pytest.raises(ConfigError, match="not found"):
        load_rows(spec, "eval")
