"""MLRun model-monitoring application: the served traffic of each task model, without labels.

On a cluster each group's serving function is tracked (``configure_group``: ``set_tracking``),
so every task model is a model endpoint and MLRun hands this application each window's sampled
requests (``monitoring_context.sample_df``). It computes what the served-source re-evaluation
computes offline (``rightsizer.monitor.served_report``, the one implementation): input-length and
answer-mix drift against the task's eval split and p95 latency against its SLO, and returns them
as MLRun application results (drift, concept drift, system performance), ``detected`` past the
task's thresholds. ``alert_configs`` builds the alerts that fire on those results;
``project_setup.py`` registers the application (``project.set_model_monitoring_function``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import mlrun
import mlrun.common.schemas.alert as alert_schemas
from mlrun.alerts.alert import AlertConfig
from mlrun.common.schemas.model_monitoring.constants import ResultKindApp, ResultStatusApp
from mlrun.model_monitoring.applications import (ModelMonitoringApplicationBase, ModelMonitoringApplicationResult,
                                                 MonitoringApplicationContext)

from rightsizer.evaluate import load_rows
from rightsizer.monitor import served_report
from rightsizer.taskspec import app_task_paths, load_task

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "served-traffic"
# result name -> (its kind, the report figure, the flag that marks it detected)
RESULTS = {"length_drift": (ResultKindApp.data_drift, "length_drift", "length_drift_flag"),
           "answer_mix_drift": (ResultKindApp.concept_drift, "answer_mix_drift", "answer_mix_flag"),
           "latency_p95_ms": (ResultKindApp.system_performance, "latency_p95_ms", "latency_flag")}
EVENTS = {ResultKindApp.data_drift: alert_schemas.EventKind.DATA_DRIFT_DETECTED,
          ResultKindApp.concept_drift: alert_schemas.EventKind.CONCEPT_DRIFT_DETECTED,
          ResultKindApp.system_performance: alert_schemas.EventKind.SYSTEM_PERFORMANCE_DETECTED}


def traffic_of(df, task: str) -> list[dict[str, Any]]:
    """The window's sampled requests as traffic records (``rightsizer.serving.traffic_log``
    fields): the first feature column is the input, the first label column the answer, a
    ``latency`` column (microseconds, as MLRun's stream writes it) the latency."""
    if df is None or len(df) == 0:
        return []
    cols = list(df.columns)
    inp = next((c for c in cols if c.startswith("f") or c in ("input", "inputs")), cols[0])
    out = next((c for c in cols if c.startswith("p") or c in ("answer", "label", "outputs")), cols[-1])
    now = time.time()
    return [{"ts": now, "task": task, "model": task, "input": str(r[inp]), "answer": str(r[out]),
             "latency_ms": float(r["latency"]) / 1e3 if "latency" in cols else 0.0, "completion_tokens": None}
            for _, r in df.iterrows()]


def task_specs(app: str = "tasks/demo_app.yaml") -> dict[str, Any]:
    """The app's task specs by task name (the model endpoint of a task model is named after it)."""
    return {name: load_task(ROOT / spec) for name, spec in app_task_paths(app, root=str(ROOT))}


class ServedTrafficApp(ModelMonitoringApplicationBase):
    """Per window of a task model's endpoint: drift and p95 latency as application results."""

    def __init__(self, app: str = "tasks/demo_app.yaml", **kwargs):
        self.specs = task_specs(app)

    def do_tracking(self, monitoring_context: MonitoringApplicationContext) -> list[ModelMonitoringApplicationResult]:
        endpoint = monitoring_context.model_endpoint
        task = getattr(getattr(endpoint, "metadata", None), "name", None) or str(endpoint)
        spec = self.specs.get(task)
        rows = traffic_of(monitoring_context.sample_df, task)
        if spec is None or not rows:  # not a task model of the app, or no requests in the window
            return []
        report = served_report(spec, rows, load_rows(spec, spec.eval_split, spec.max_eval_examples), window_s=1e12)
        return results_of(report)


def results_of(report: dict) -> list[ModelMonitoringApplicationResult]:
    """The latest window's figures as MLRun application results (``detected`` where flagged)."""
    w = report["windows"][-1]
    out = []
    for name, (kind, figure, flag) in RESULTS.items():
        if w.get(figure) is None:  # e.g. the answer mix of a task with no labels
            continue
        out.append(ModelMonitoringApplicationResult(
            name=name, value=float(w[figure]), kind=kind,
            status=ResultStatusApp.detected if w.get(flag) else ResultStatusApp.no_detection,
            extra_data={"task": report["task"], "requests": w["requests"], "action": report["action"]}))
    return out


def alert_configs(project: str, endpoint_ids: list[str] | None = None) -> list[AlertConfig]:
    """One alert per result kind the application reports, on the tracked endpoints' results
    (``endpoint_ids``: all of the project's when None). Storing them needs the MLRun API
    (``project.store_alert_config``); building them does not."""
    configs = []
    for name, (kind, _, _) in RESULTS.items():
        entities = alert_schemas.EventEntities(kind=alert_schemas.EventEntityKind.MODEL_ENDPOINT_RESULT,
                                               project=project, ids=endpoint_ids or ["*"])
        configs.append(AlertConfig(
            project=project, name=f"{APP_NAME}-{name.replace('_', '-')}",
            summary=f"{{{{project}}}}: {name} detected on a task model's served traffic; re-run size_and_deploy",
            severity=alert_schemas.AlertSeverity.MEDIUM, entities=entities,
            trigger=alert_schemas.AlertTrigger(events=[EVENTS[kind]]),
            criteria=alert_schemas.AlertCriteria(count=1, period="1h")))
    return configs


def register(project: mlrun.projects.MlrunProject, image: str = "mlrun/mlrun"):
    """Register the application on ``project`` (what ``project_setup.py`` calls)."""
    return project.set_model_monitoring_function(name=APP_NAME, func="functions/monitoring_app.py",
                                                 application_class="ServedTrafficApp", image=image)


__all__ = ["ServedTrafficApp", "alert_configs", "register", "results_of", "traffic_of", "APP_NAME"]
