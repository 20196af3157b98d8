"""A cascade served as the ladder judged it (issue 32, rightsizer.serving.cascade).

The ladder pairs a smaller candidate that failed (an untrained Llama below tiny-s, as in
tests/test_select.py) with the chosen one (tiny-s, trained on ticket routing); the quantize
step puts the small model's bundle and the pair into the chosen model's bundle; served with
``engine.cascade``, the small model answers first and the chosen one below the threshold.
Pinned: what the design guarantees on any CPU (the served deferral on the confirm half is the
evaluated one, each answer names its model), not one machine's scores.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import mlrun
import pytest

from functions.serving import set_task_models
from rightsizer import cascade
from rightsizer.bundle import CASCADE_DIR, CASCADE_FILE, read_cascade
from rightsizer.errors import ConfigError
from rightsizer.evaluate import load_rows
from rightsizer.quantize import quantize_for_task
from rightsizer.select import select_model
from rightsizer.serving.cascade import CascadeEngine, engine_for
from rightsizer.serving.contract import EngineConfig
from rightsizer.taskspec import Ladder
from tests.test_select import _untrained_candidate

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def judged(demo_models, tmp_path_factory, routing_spec_module):
    tmp = tmp_path_factory.mktemp("cascade")
    small = _untrained_candidate(demo_models, tmp / "untrained")
    spec = dataclasses.replace(routing_spec_module, candidates=["demo:tiny-s", small], decision_rule="point",
                               max_eval_examples=80, precisions=["int8"],
                               ladder=Ladder(rungs=["zero_shot"], cascade=True))
    sel = select_model(spec, tmp / "ladder", progress=False)
    pair = sel.cascade["pairs"][0]
    # on these 80 examples the pair meets the bar (on 40 it does not: the untrained model's
    # confidences are noise, and 20 calibration examples choose a threshold the other 20 miss);
    # its weights are seeded, so its confidences are these on any CPU up to rounding
    assert pair["meets_bar"] and sel.cascade["kept"] == 0, sel.cascade
    out = quantize_for_task(spec, sel, sel.model_dir, tmp / "bundle", progress=False)
    return spec, sel, pair, out.bundle_dir


@pytest.fixture(scope="module")
def routing_spec_module():
    from rightsizer.taskspec import load_task

    return load_task(ROOT / "tasks" / "ticket_routing.yaml")


def _confirm_rows(spec, pair):
    rows = load_rows(spec, spec.eval_split, spec.max_eval_examples)
    _, confirm = cascade.split_halves(len(rows))
    assert len(confirm) == pair["n_confirm"]
    return [rows[i] for i in confirm]


def test_the_quantize_step_puts_the_pair_into_the_chosen_bundle(judged):
    _, _, pair, bundle = judged
    assert read_cascade(bundle) == pair and (Path(bundle) / CASCADE_DIR / "rightsizer.json").is_file()
    meta = json.loads((Path(bundle) / CASCADE_DIR / "rightsizer.json").read_text())
    assert (meta["base_model"], meta["rung"]) == (pair["small"], pair["small_rung"])


def test_the_engine_defers_what_the_ladder_deferred_and_names_who_answered(judged):
    spec, _, pair, bundle = judged
    rows = _confirm_rows(spec, pair)
    engine = engine_for(bundle, config=EngineConfig(cascade=True))
    try:
        assert isinstance(engine, CascadeEngine)
        answers = engine.answer([r[spec.input_field] for r in rows])
        deferred = [a.response["deferred"] for a in answers]
        assert sum(deferred) / len(rows) == pair["deferral_rate"]
        assert {a.response["answered_by"] for a, d in zip(answers, deferred) if d} <= {pair["big"]}
        assert {a.response["answered_by"] for a, d in zip(answers, deferred) if not d} <= {pair["small"]}
        assert all((a.response["small_confidence"] < pair["threshold"]) == d for a, d in zip(answers, deferred))
        quality = sum(a.response["label"] == r[spec.label_field] for a, r in zip(answers, rows)) / len(rows)
        # the chosen model is served quantized (int8 kept within the task's tolerance), the
        # ladder judged it unquantized: the small model's share is the same answers
        assert abs(quality - pair["quality"]) <= spec.quality_tolerance
        card = engine.card()["cascade"]
        assert card["served_deferral_rate"] == pair["deferral_rate"] and card["threshold"] == pair["threshold"]
    finally:
        engine.stop()


def test_over_http_the_confirm_half_gives_the_evaluated_deferral_rate(judged):
    spec, _, pair, bundle = judged
    rows = _confirm_rows(spec, pair)
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    fn = project.get_function("serving")
    set_task_models(fn, {spec.name: str(bundle)}, engines={spec.name: {"cascade": True}})
    server = fn.to_mock_server()
    try:
        out = server.test(f"/v2/models/{spec.name}/infer", body={"inputs": [r["text"] for r in rows]})["outputs"]
        assert sum(o["deferred"] for o in out) / len(rows) == pair["deferral_rate"]
        assert all(o["answered_by"] == (pair["big"] if o["deferred"] else pair["small"]) for o in out)
        one = server.test("/v1/completions", body={"model": spec.name, "prompt": rows[0]["text"]})
        assert one["model"] == one["choices"][0]["rightsizer"]["answered_by"]  # the model that answered
    finally:
        server.wait_for_completion()


def test_cascade_on_for_a_bundle_without_one_is_refused_by_name(demo_models, tmp_path, routing_spec_module):
    from rightsizer.bundle import write_bundle

    plain = write_bundle(demo_models / "models" / "tiny-s", routing_spec_module, tmp_path / "plain",
                         base_model="demo:tiny-s", rung="zero_shot")
    with pytest.raises(ConfigError, match="engine.cascade is on but the bundle carries no cascade"):
        engine_for(plain, config=EngineConfig(cascade=True))
    (plain / CASCADE_FILE).write_text(json.dumps({"threshold": "high"}))
    with pytest.raises(ConfigError, match="threshold: expected a number"):
        read_cascade(plain)


def _write_rows(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_reevaluation_watches_the_deferral_rate(judged, tmp_path):
    """On the confirm half the deferral rate is the evaluated one, nothing flagged; on traffic
    the small model is sure of (a shift in what users send) it falls to 0 and the move beyond
    deferral_tolerance is flagged as a regression is, with the action naming it."""
    from rightsizer.reevaluate import reevaluate_bundle

    spec, _, pair, bundle = judged
    rows = _confirm_rows(spec, pair)
    same = reevaluate_bundle(spec, str(bundle), _write_rows(tmp_path / "same.jsonl", rows), progress=False)
    assert same["cascade"]["fresh_deferral_rate"] == pair["deferral_rate"]
    assert not same["cascade"]["deferral_regression"]
    engine = engine_for(bundle, config=EngineConfig(cascade=True))
    try:
        kept = [r for r, a in zip(rows, engine.answer([r[spec.input_field] for r in rows]))
                if not a.response["deferred"]]
    finally:
        engine.stop()
    assert kept and pair["deferral_rate"] > spec.deferral_tolerance  # a shift this test can see
    shifted = reevaluate_bundle(spec, str(bundle), _write_rows(tmp_path / "sure.jsonl", kept), progress=False)
    assert shifted["cascade"]["fresh_deferral_rate"] == 0.0 and shifted["cascade"]["deferral_regression"]
    assert shifted["regression"] and "deferral rate" in shifted["action"]


def test_a_served_free_text_answer_has_the_confidence_evaluation_gives_it(demo_models, tmp_path):
    """What the cascade engine defers on for extraction and generation: the answer's tokens'
    mean probability after its prompt, computed as the ladder computed it."""
    from rightsizer import tasktypes
    from rightsizer.bundle import write_bundle
    from rightsizer.inference import load_bundle, predict
    from rightsizer.taskspec import load_task

    spec = load_task(ROOT / "tasks" / "order_extraction.yaml")
    bundle = write_bundle(demo_models / "models" / "tiny-s", spec, tmp_path / "b", base_model="demo:tiny-s",
                          rung="zero_shot")
    rows = load_rows(spec, spec.eval_split, 6)
    loaded = load_bundle(bundle, device=None)
    evaluated = tasktypes.get(spec.type).confidence(
        loaded.spec, predict(loaded.model, loaded.tokenizer, loaded.spec, rows, confidence=True))
    engine = engine_for(bundle)
    try:
        plain = engine.answer([r[spec.input_field] for r in rows])
        served = engine.answer([r[spec.input_field] for r in rows], confidence=True)
    finally:
        engine.stop()
    assert all(a.confidence is None for a in plain)  # only asked for: one more forward pass
    assert [a.confidence for a in served] == pytest.approx(evaluated, abs=1e-4)
    assert any(c > 0 for c in evaluated)  # tiny-s writes valid orders: not all 0


def test_the_select_step_logs_the_small_model_and_the_quantize_step_bundles_it(demo_models, tmp_path):
    """Through the MLRun functions (local runs): the select step registers the kept pair's
    small model as ``<task>-cascade-small`` and the selection names where it is (a store URI
    where an MLRun API keeps artifacts: a cluster's steps do not share a disk); the quantize
    step reaches it from there and bundles it with the chosen model."""
    from rightsizer.layout import RunLayout
    from rightsizer.select import Selection
    from rightsizer.taskspec import load_task
    from tests.specfiles import save_task

    base = load_task(ROOT / "tasks" / "ticket_routing.yaml")
    small = _untrained_candidate(demo_models, tmp_path / "untrained")
    spec = dataclasses.replace(base, candidates=["demo:tiny-s", small], decision_rule="point", max_eval_examples=80,
                               precisions=["int8"], ladder=Ladder(rungs=["zero_shot"], cascade=True),
                               dataset={k: f"data/{Path(v).name}" for k, v in base.dataset.items()})
    shutil.copytree(ROOT / "tasks" / "data" / "ticket_routing", tmp_path / "data")  # the spec's own folder
    save_task(spec, tmp_path / "routing.yaml")
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    art = tmp_path / "a"
    selected = project.run_function("select", params={"task_spec": str(tmp_path / "routing.yaml"),
                                                      "latency_repeats": 1}, local=True, output_path=str(art))
    assert selected.status.state == "completed", selected.status.error
    assert f"{spec.name}-cascade-small" in selected.status.artifact_uris  # as the judged fixture: a pair kept
    results = selected.status.results
    pair = Selection.load(results["selection"]).kept_cascade()
    assert (Path(pair["small_model_dir"]) / "config.json").is_file()  # no MLRun API here: the local folder
    quantized = project.run_function("quantize", params={"task_spec": str(tmp_path / "routing.yaml"),
                                                         "selection": results["selection"],
                                                         "model_dir": results["model_dir"]},
                                     local=True, output_path=str(art))
    assert quantized.status.state == "completed", quantized.status.error
    bundle = RunLayout(art).bundle_dir(spec.name)
    assert read_cascade(bundle)["small"] == small and (bundle / CASCADE_DIR / "config.json").is_file()
