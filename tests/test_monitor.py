"""The served-traffic check without labels: traffic like the eval split raises nothing; traffic
from another distribution, answers a shadow model disagrees with, latency over the SLO and a
moved deferral share are flagged, each naming what moved; bad input is a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from rightsizer.errors import ConfigError
from rightsizer.evaluate import load_rows
from rightsizer.monitor import served_figure, served_report
from rightsizer.taskspec import load_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def routing():
    spec = load_task(ROOT / "tasks" / "ticket_routing.yaml")
    return spec, load_rows(spec, "eval"), load_rows(spec, "fresh")


def _traffic(spec, rows, *, t0=1000.0, gap=1.0, answer=None, latency=20.0, deferred=None):
    return [{"ts": t0 + i * gap, "task": spec.name, "model": "demo:tiny-s", "input": r[spec.input_field],
             "answer": answer if answer is not None else r[spec.label_field], "latency_ms": latency,
             "completion_tokens": 2, "deferred": deferred} for i, r in enumerate(rows)]


def test_traffic_like_the_eval_split_raises_nothing(routing):
    spec, ref, fresh = routing
    out = served_report(spec, _traffic(spec, fresh), ref)
    assert out["regression"] is False and out["action"] == "none" and out["requests"] == len(fresh)
    (w,) = out["windows"]
    assert w["length_drift"] < 0.25 and w["answer_mix_drift"] < 0.25 and not w["latency_flag"]


def test_a_shifted_stream_is_flagged_with_what_moved(routing):
    spec, ref, fresh = routing
    reviews = load_rows(load_task(ROOT / "tasks" / "review_sentiment.yaml"), "eval")
    # inputs from another distribution (long product reviews) and one answer for all of them
    shifted = [{**r, spec.input_field: r["text"] + " " + r["text"]} for r in reviews]
    out = served_report(spec, _traffic(spec, shifted, answer="billing"), ref)
    assert out["regression"] is True and set(out["flags"]) >= {"length_drift", "answer_mix"}
    assert "input lengths drifted" in out["action"] and "answer mix drifted" in out["action"]
    # a shadow model that disagrees on most answers, against the agreement the two had on the eval split
    out = served_report(spec, _traffic(spec, fresh), ref, shadow=lambda texts: ["account"] * len(texts),
                        reference_agreement=0.95)
    assert "agreement" in out["flags"] and out["windows"][-1]["agreement"] < 0.5
    out = served_report(spec, _traffic(spec, fresh), ref, shadow=lambda texts: [r[spec.label_field] for r in fresh],
                        reference_agreement=0.95)
    assert out["windows"][-1]["agreement"] == 1.0 and "agreement" not in out["flags"]


def test_a_judge_that_calls_fewer_answers_right_is_flagged(routing):
    """The judge's verdict share on served answers, held to its share on the eval split: an
    oracle judge (right when the answer is the row's gold label) on answers that are all one
    label calls most of them wrong."""
    spec, ref, fresh = routing
    gold = {r[spec.input_field]: r[spec.label_field] for r in fresh}

    def oracle(inputs, answers):
        return [gold[i] == a for i, a in zip(inputs, answers)]
    out = served_report(spec, _traffic(spec, fresh), ref, judge=oracle, reference_judged=1.0)
    assert out["windows"][-1]["judged_right"] == 1.0 and "judge" not in out["flags"]
    out = served_report(spec, _traffic(spec, fresh, answer="billing"), ref, judge=oracle, reference_judged=1.0)
    share = sum(r[spec.label_field] == "billing" for r in fresh) / len(fresh)
    assert out["windows"][-1]["judged_right"] == pytest.approx(share) and "judge" in out["flags"]
    assert f"the judge calls {share:.2f} of the answers right against 1.00" in out["action"]
    assert any(t.name == "judged right" for t in served_figure(out).data)


def test_a_judge_model_of_a_chat_family_answers_yes_or_no_in_its_template(routing, tmp_path):
    """``rightsizer.judge`` on a tiny random Qwen3 (ChatML template): the judge's prompt is a chat
    turn with the task's prompt, the answer and the question; one verdict per answer; a spec
    with an empty judge reference is a clear error naming the field."""
    import dataclasses

    from rightsizer.inference import build_prompt, load_model, with_format
    from rightsizer.judge import CASE, QUESTION, case_text, judge_spec, judged_right, load_judge
    from rightsizer.taskspec import task_from_dict
    from tests.zoo import build

    spec, ref, fresh = routing
    judge_dir = build("qwen3", tmp_path / "qwen3")
    spec = dataclasses.replace(spec, judge=str(judge_dir))
    judge = load_judge(spec)
    texts = [r[spec.input_field] for r in fresh[:6]]
    verdicts = judge(texts, [r[spec.label_field] for r in fresh[:6]])
    assert len(verdicts) == 6 and all(isinstance(v, bool) for v in verdicts)
    assert 0.0 <= judged_right(judge, texts, ["billing"] * 6) <= 1.0
    _, tok = load_model(judge_dir)
    prompt = build_prompt(with_format(judge_spec(spec), tok), {CASE: case_text(spec, texts[0], "billing")})
    assert prompt.startswith("<|im_start|>system") and "<|im_start|>assistant" in prompt
    assert texts[0] in prompt and f"billing\n\n{QUESTION}" in prompt
    with pytest.raises(ConfigError, match="judge: an empty model reference"):
        task_from_dict({**spec.to_dict(), "judge": " "}, base_dir=spec.base_dir)


def test_latency_over_the_slo_and_a_moved_deferral_share_are_flagged(routing):
    spec, ref, fresh = routing
    out = served_report(spec, _traffic(spec, fresh, latency=10 * spec.slo.ttft_ms), ref)
    assert out["flags"] == ["latency"] and "p95 latency" in out["action"]
    out = served_report(spec, _traffic(spec, fresh, deferred=True), ref, evaluated_deferral=0.3)
    assert out["flags"] == ["deferral"] and "deferral share 1.00 against 0.30" in out["action"]


def test_windows_follow_time_and_only_the_latest_decides(routing):
    spec, ref, fresh = routing
    late = _traffic(spec, fresh, t0=1000.0 + 7200, latency=10 * spec.slo.ttft_ms)
    out = served_report(spec, _traffic(spec, fresh) + late, ref, window_s=3600)
    assert [w["window"] for w in out["windows"]] == [0, 2]
    assert not out["windows"][0]["latency_flag"] and out["windows"][1]["latency_flag"] and out["regression"]
    fig = served_figure(out)
    assert len(fig.data) >= 3


def test_bad_input_is_a_clear_error(routing):
    spec, ref, fresh = routing
    other = [{**r, "task": "order_extraction"} for r in _traffic(spec, fresh)]
    with pytest.raises(ConfigError, match="no served traffic for task 'ticket_routing' .*order_extraction"):
        served_report(spec, other, ref)
    with pytest.raises(ConfigError, match="empty eval split"):
        served_report(spec, _traffic(spec, fresh), [])
    with pytest.raises(ConfigError, match="window_s: 0"):
        served_report(spec, _traffic(spec, fresh), ref, window_s=0)


def test_the_monitoring_application_flags_a_shifted_window_and_its_alerts_are_built(routing):
    """functions/monitoring_app.py on a window of tracked requests (MLRun's sample frame): the
    same figures as the offline check, as MLRun application results, ``detected`` where the
    traffic shifted; an alert per result kind (the project's registration of the application:
    tests/test_project_spec.py)."""
    import pandas as pd
    from mlrun.common.schemas.model_monitoring.constants import ResultStatusApp

    from functions.monitoring_app import APP_NAME, ServedTrafficApp, alert_configs, results_of, traffic_of

    spec, ref, fresh = routing
    app = ServedTrafficApp()
    like = pd.DataFrame({"f0": [r["text"] for r in fresh], "p0": [r["label"] for r in fresh],
                         "latency": [20_000.0] * len(fresh)})
    report = served_report(spec, traffic_of(like, spec.name), ref)
    assert all(r.status == ResultStatusApp.no_detection for r in results_of(report))
    reviews = load_rows(load_task(ROOT / "tasks" / "review_sentiment.yaml"), "eval")
    shifted = pd.DataFrame({"f0": [r["text"] + " " + r["text"] for r in reviews], "p0": ["billing"] * len(reviews),
                            "latency": [20_000.0] * len(reviews)})
    results = {r.name: r for r in results_of(served_report(spec, traffic_of(shifted, spec.name), ref))}
    assert results["length_drift"].status == ResultStatusApp.detected
    assert results["answer_mix_drift"].status == ResultStatusApp.detected
    assert results["latency_p95_ms"].status == ResultStatusApp.no_detection and results["latency_p95_ms"].value == 20.0
    assert spec.name in app.specs
    alerts = alert_configs("rightsizer")
    assert [a.name for a in alerts] == [f"{APP_NAME}-data-drift", f"{APP_NAME}-concept-drift",
                                        f"{APP_NAME}-system-performance", f"{APP_NAME}-model-performance"]
    assert [a.trigger.events[0].value for a in alerts] == [
        "data-drift-detected", "concept-drift-detected", "system-performance-detected", "model-performance-detected"]
    assert "agreement, judged_right detected" in alerts[-1].summary


def test_the_application_scores_the_shadow_and_labels_a_flagged_model(routing, monkeypatch):
    """``do_tracking`` on a window whose answers the shadow model disagrees with: an agreement
    result ``detected`` (model performance), and the task's registered model labelled as the
    labelled re-evaluation labels it; a window like the eval split labels nothing."""
    from types import SimpleNamespace

    import pandas as pd
    from mlrun.common.schemas.model_monitoring.constants import ResultKindApp, ResultStatusApp

    import functions.monitoring_app as monitoring_app
    from rightsizer.reevaluate import LabelFree

    spec, ref, fresh = routing
    labelled = []
    monkeypatch.setattr(monitoring_app, "label_model", lambda uri, labels: labelled.append((uri, labels)))
    app = monitoring_app.ServedTrafficApp(models="")
    gold = [r["label"] for r in fresh]
    app._checks[spec.name] = LabelFree(shadow=lambda texts: list(gold), reference_agreement=1.0)
    frame = pd.DataFrame({"f0": [r["text"] for r in fresh], "p0": gold, "latency": [20_000.0] * len(fresh)})
    ctx = SimpleNamespace(endpoint_name=spec.name, sample_df=frame, project_name="rightsizer")
    results = {r.name: r for r in app.do_tracking(ctx)}
    assert results["agreement"].value == 1.0 and results["agreement"].status == ResultStatusApp.no_detection
    assert results["agreement"].kind == ResultKindApp.model_performance and not labelled
    ctx.sample_df = frame.assign(p0=["billing"] * len(fresh))
    results = {r.name: r for r in app.do_tracking(ctx)}
    assert results["agreement"].status == ResultStatusApp.detected and results["agreement"].value < 0.5
    assert labelled == [(f"store://models/rightsizer/{spec.name}", {"regression": "true", "regression_source": "served"})]
    assert app.do_tracking(SimpleNamespace(endpoint_name="not-a-task", sample_df=frame, project_name="p")) == []


def test_label_model_labels_a_registered_model_where_an_api_keeps_it(monkeypatch):
    """``functions.mlrun_io.label_model``: nothing without an MLRun API (a local run); with one
    (a stand-in for the remote API), the model artifact is stored back with the labels added."""
    from types import SimpleNamespace

    import mlrun

    import functions.mlrun_io as mlrun_io

    assert mlrun_io.label_model("store://models/p/ticket_routing", {"regression": "true"}) is False  # no API here
    assert mlrun_io.label_model("/tmp/bundle", {"regression": "true"}) is False  # not a registered model
    stored = []
    artifact = SimpleNamespace(metadata=SimpleNamespace(labels={"task": "ticket_routing"}, project="p"),
                               spec=SimpleNamespace(db_key="ticket_routing"), to_dict=lambda: {"labels": "as stored"})
    monkeypatch.setattr(mlrun_io, "has_api", lambda: True)
    monkeypatch.setattr(mlrun.artifacts, "get_model", lambda uri: (None, artifact, {}))
    monkeypatch.setattr(mlrun, "get_run_db", lambda: SimpleNamespace(
        store_artifact=lambda key, body, project: stored.append((key, project))))
    assert mlrun_io.label_model("store://models/p/ticket_routing", {"regression": "true"}) is True
    assert artifact.metadata.labels == {"task": "ticket_routing", "regression": "true"}
    assert stored == [("ticket_routing", "p")]
