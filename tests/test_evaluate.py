"""Evaluation harness: log-likelihood scoring, metrics, CI, latency, bad data."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError
from rightsizer import metrics
from rightsizer.metrics import bootstrap_ci
from rightsizer.evaluate import (check_task_data, evaluate_quality, load_rows,
                                 measure_latency, pick_shots)
from rightsizer.inference import build_prompt, load_model, score_options
from rightsizer.metrics import macro_f1
from rightsizer.screening import screened_quality, stage_sizes, upper_bound
from rightsizer.taskspec import Screening


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


def test_extraction_and_generation_metrics_by_hand():
    assert metrics.exact_match_one("The Billing queue.", "billing  Queue") == 1.0
    assert metrics.exact_match_one(["refund", "billing"], "Billing") == 1.0
    assert metrics.exact_match_one("billing", "shipping") == 0.0
    # gold {red, shoe, size, 9} vs pred {red, shoe}: P=1, R=1/2 -> F1 2/3
    assert metrics.token_f1_one("a red shoe size 9", "the red shoe") == pytest.approx(2 / 3)
    assert metrics.token_f1_one("x", "") == 0.0
    # LCS(the cat sat on the mat, the cat on a mat) = the cat on mat (4): P 4/5, R 4/6
    assert metrics.rouge_l_one("the cat sat on the mat", "the cat on a mat") == pytest.approx(
        2 * (4 / 5) * (4 / 6) / (4 / 5 + 4 / 6))
    assert metrics.compute("exact_match", ["a", "b"], ["a", "c"]) == 0.5
    lo, hi = bootstrap_ci(["a b", "c d", "e f"], ["a b", "c", "x"], [], "token_f1")
    assert 0.0 <= lo <= 0.5 <= hi <= 1.0


def test_calibration_by_hand():
    assert metrics.expected_calibration_error([0.9, 0.9], [True, False]) == pytest.approx(0.4)
    assert metrics.brier([[1.0, 0.0], [0.5, 0.5]], [0, 1]) == pytest.approx(0.25)
    # over-confident scores (right 3 of 4 at ~1.0): the fitted temperature softens them
    assert metrics.fit_temperature([[9, 0], [9, 0], [9, 0], [9, 0]], [0, 0, 0, 1]) > 1.5


def test_data_problems_reported_at_once(tmp_path, routing_spec):
    small = tmp_path / "train.jsonl"
    small.write_text("\n".join(json.dumps({"text": "t", "label": "billing"}) for _ in range(2)))
    empty = tmp_path / "eval.jsonl"
    empty.write_text("")
    spec = dataclasses.replace(routing_spec, dataset={"train": str(small), "eval": str(empty)})
    with pytest.raises(ConfigError) as e:
        check_task_data(spec)
    text = str(e.value)
    assert len(e.value.problems) == 2
    assert "dataset.eval" in text and "empty" in text
    assert "few_shot_k: 4 is larger than the train split (2 rows)" in text


def test_extraction_and_generation_by_greedy_generation(demo_models, routing_spec, tmp_path):
    model, tok = load_model("demo:tiny-s")
    rows = load_rows(routing_spec, "eval", 12)
    ext = dataclasses.replace(routing_spec, type="extraction", metric="exact_match", labels=[],
                              max_new_tokens=4)
    q = evaluate_quality(model, tok, ext, rows)
    # routing is trained into tiny-s: it generates the queue name itself
    assert q.predictions == [r["label"] for r in rows] and q.score == 1.0
    assert q.metrics == {"exact_match": 1.0, "token_f1": 1.0} and q.accuracy is None
    # free-text references: "<queue> queue please" vs the generated "<queue>" -> ROUGE-L 0.5
    data = tmp_path / "gen.jsonl"
    data.write_text("\n".join(json.dumps({"text": r["text"], "label": f"{r['label']} queue please"})
                              for r in rows))
    gen = dataclasses.replace(ext, type="generation", metric="rouge_l",
                              dataset={"train": str(data), "eval": str(data)})
    q = evaluate_quality(model, tok, gen, load_rows(gen, "eval"))
    assert q.score == pytest.approx(0.5) and q.n == 12


def test_classification_probabilities_are_calibrated(demo_models, sentiment_spec):
    model, tok = load_model("demo:tiny-s")
    q = evaluate_quality(model, tok, sentiment_spec, load_rows(sentiment_spec, "eval", 40))
    c = q.calibration
    assert q.accuracy == q.score and 0.5 <= q.mean_confidence <= 1.0
    assert c["temperature"] > 0 and 0.0 <= c["ece"] <= 1.0
    assert c["brier_calibrated"] <= c["brier"] + 1e-9  # temperature fitted to minimise NLL


def test_stage_sizes_and_bound():
    assert stage_sizes(160, 20, 2) == [20, 40, 80, 160]
    assert stage_sizes(30, 20, 2) == [20, 30]
    assert stage_sizes(10, 20, 2) == [10]
    assert stage_sizes(7, 2, 1.1) == [2, 3, 4, 5, 6, 7]


def test_screening_stops_hopeless_rungs_and_keeps_good_ones(demo_models, sentiment_spec,
                                                            routing_spec):
    model, tok = load_model("demo:tiny-s")
    rows = load_rows(sentiment_spec, "eval", 80)
    s = screened_quality(model, tok, sentiment_spec, rows, threshold=0.85)
    assert s.stopped and s.quality.n == 20 and s.stages == [20]
    assert s.bound < 0.85 and s.n_total == 80
    # the bound is the best the full split could reach: seen rows count as scored
    assert s.bound >= s.quality.score * 20 / 80
    off = screened_quality(model, tok, sentiment_spec, rows, threshold=0.85,
                           screening=Screening(enabled=False))
    assert not off.stopped and off.quality.n == 80
    full = evaluate_quality(model, tok, sentiment_spec, rows)
    assert off.quality.score == full.score and off.quality.ci_low == full.ci_low
    # a task the model knows is scored on every row and never stopped
    rows = load_rows(routing_spec, "eval", 80)
    s = screened_quality(model, tok, routing_spec, rows, threshold=0.9)
    assert not s.stopped and s.stages == [20, 40, 80] and s.quality.score == 1.0
    # 4 of 8 rows seen, all wrong: the unseen half is bounded by Wilson (~0.40 at n=4), not 0
    b = upper_bound(routing_spec, ["billing"] * 4, ["account"] * 4, 8, 0.05)
    assert 0.15 < b < 0.25
    assert upper_bound(routing_spec, ["billing"] * 4, ["billing"] * 4, 8, 0.05) == 1.0


def test_evaluate_model_measures_each_batch_size(demo_models, routing_spec):
    from rightsizer.evaluate import evaluate_model

    spec = dataclasses.replace(routing_spec, max_eval_examples=20)
    out = evaluate_model(spec, "demo:tiny-s", repeats=2, progress=False, batch_sizes=(4, 16))
    assert [m["batch"] for m in out["latency_by_batch"]] == [1, 4, 16]
    assert out["latency"] == out["latency_by_batch"][0]
    for m in out["latency_by_batch"]:
        assert m["ttft_p95_ms"] >= m["ttft_p50_ms"] > 0 and m["ttft_std_ms"] >= 0
    assert out["quality"]["n"] == 20 and out["quality"]["score"] == 1.0


def _spec_with_eval(tmp_path, ref: str):
    import dataclasses as dc

    from rightsizer.taskspec import load_task

    spec = load_task(Path(__file__).resolve().parents[1] / "tasks" / "ticket_routing.yaml")
    (tmp_path / "project.yaml").write_text("kind: project\n")
    (tmp_path / "tasks").mkdir(exist_ok=True)
    return dc.replace(spec, dataset={**spec.dataset, "eval": ref}, base_dir=str(tmp_path / "tasks"))


@pytest.mark.parametrize("ref, expected", [
    ("../../../etc/passwd", r"resolves to /.*, outside the project"),
    ("data/missing.jsonl", r"file not found: .*tasks/data/missing.jsonl"),
    ("not a dataset", r"is not a local file or folder .* and not a hub dataset id"),
    ("acme/tickets", r"dataset.eval: 'acme/tickets' is not a local file or folder .*; as a hub dataset id "
                     r"it is loaded only with hub_datasets: true"),
])
def test_dataset_refs_that_cannot_be_data_are_refused_before_loading(tmp_path, ref, expected):
    from rightsizer.evaluate import load_rows

    with pytest.raises(ConfigError, match=expected):
        load_rows(_spec_with_eval(tmp_path, ref), "eval")


def test_an_absolute_dataset_path_must_be_in_the_project_or_a_listed_data_root(tmp_path, tmp_path_factory,
                                                                               monkeypatch):
    from rightsizer.evaluate import _check_dataset_ref

    elsewhere = tmp_path_factory.mktemp("elsewhere")  # not under the project (tmp_path)
    data = elsewhere / "eval.jsonl"
    data.write_text('{"text": "fine", "label": "billing"}\n')
    spec = _spec_with_eval(tmp_path, str(data))
    monkeypatch.setenv("RIGHTSIZER_DATA_ROOTS", "")
    with pytest.raises(ConfigError, match=r"dataset.eval: '.*eval.jsonl' is outside the project .* and the listed "
                                          r"data roots \(none\); add its folder to \$RIGHTSIZER_DATA_ROOTS"):
        _check_dataset_ref(spec, "eval")
    monkeypatch.setenv("RIGHTSIZER_DATA_ROOTS", os.pathsep.join(["/nowhere", str(elsewhere)]))
    assert _check_dataset_ref(spec, "eval") == str(data)
    # inside the project an absolute path needs no listing
    inside = tmp_path / "tasks" / "in.jsonl"
    inside.write_text('{"text": "fine", "label": "billing"}\n')
    monkeypatch.setenv("RIGHTSIZER_DATA_ROOTS", "")
    assert _check_dataset_ref(_spec_with_eval(tmp_path, str(inside)), "eval") == str(inside)


def test_a_knowledge_source_outside_the_project_and_the_data_roots_is_refused_at_load(tmp_path, monkeypatch):
    import yaml

    from rightsizer.taskspec import load_task

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "tasks" / "answer_drafting.yaml").read_text())
    (tmp_path / "project.yaml").write_text("kind: project\n")
    outside = tmp_path.parent / f"{tmp_path.name}-kb"
    outside.mkdir()
    (outside / "policy.md").write_text("Returns are free within 30 days.\n")
    raw["retrieval"]["source"] = str(outside)
    raw["dataset"] = {k: str(root / "tasks" / v) for k, v in raw["dataset"].items()}
    spec_file = tmp_path / "drafting.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("RIGHTSIZER_DATA_ROOTS", "")
    with pytest.raises(ConfigError, match=r"retrieval.source: .* outside the project .* list its folder in "
                                          r"\$RIGHTSIZER_DATA_ROOTS"):
        load_task(spec_file)
    monkeypatch.setenv("RIGHTSIZER_DATA_ROOTS", str(outside))
    assert load_task(spec_file).source_path() == outside


def test_a_hub_dataset_id_is_tried_only_where_the_spec_allows_the_hub(tmp_path, monkeypatch):
    import dataclasses as dc

    import datasets

    from rightsizer.evaluate import _check_dataset_ref, load_rows

    spec = _spec_with_eval(tmp_path, "acme/tickets")
    # the hub cannot be reached here: record what would be asked of it instead
    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append(a) or [])
    with pytest.raises(ConfigError, match="hub_datasets: true"):
        load_rows(spec, "eval")
    assert calls == []  # refused before any hub call
    allowed = dc.replace(spec, hub_datasets=True)
    assert _check_dataset_ref(allowed, "eval") == "acme/tickets"  # handed to datasets as a hub id


def test_an_oversized_row_is_refused_before_the_datasets_cache_copies_it(tmp_path):
    import json as _json

    from rightsizer.evaluate import MAX_ROW_BYTES, load_rows

    spec = _spec_with_eval(tmp_path, "data/big.jsonl")
    data = tmp_path / "tasks" / "data"
    data.mkdir()
    row = _json.dumps({"text": "x" * (MAX_ROW_BYTES + 10), "label": "billing"})
    (data / "big.jsonl").write_text(_json.dumps({"text": "fine", "label": "billing"}) + "\n" + row + "\n")
    with pytest.raises(ConfigError, match=r"big.jsonl line 2 is over \d+ bytes"):
        load_rows(spec, "eval")
    (data / "big.jsonl").write_text(_json.dumps({"text": "fine", "label": "billing"}) + "\n")
    assert load_rows(spec, "eval") == [{"text": "fine", "label": "billing"}]  # a normal file still loads
