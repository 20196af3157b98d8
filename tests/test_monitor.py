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
    traffic shifted; an alert per result kind; the project registers the application."""
    import mlrun
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
    assert [a.name for a in alerts] == [f"{APP_NAME}-length-drift", f"{APP_NAME}-answer-mix-drift",
                                        f"{APP_NAME}-latency-p95-ms"]
    assert {a.trigger.events[0].value for a in alerts} == {
        "data-drift-detected", "concept-drift-detected", "system-performance-detected"}
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    fn = project.get_function(APP_NAME)
    assert fn.metadata.labels["mlrun__type"] == "mlrun__model-monitoring-application"
    assert fn.spec.graph.steps["ServedTrafficApp"].class_name == "ServedTrafficApp"
