"""MLRun model-monitoring application: the served traffic of each task model, without labels.

On a cluster each group's serving function is tracked (``configure_group``: ``set_tracking``),
so every task model is a model endpoint and MLRun hands this application each window's sampled
requests (``monitoring_context.sample_df``). It computes what the served-source re-evaluation
computes offline (``rightsizer.monitor.served_report``, the one implementation): input-length and
answer-mix drift against the task's eval split and p95 latency against its SLO and, given the
``size_and_deploy`` run's artifacts (``models``, a path the application's pod reads), the
label-free quality checks of ``rightsizer.reevaluate.label_free_checks``: agreement with the
run's baseline model answering the window's inputs in shadow, and the verdict of the judge model
a task spec names. It returns them as MLRun application results (data drift, concept drift,
model performance, system performance), ``detected`` past the task's thresholds, and labels a
flagged task's registered model ``regression=true`` as the labelled re-evaluation does.
``alert_configs`` builds an alert per result kind; ``project_setup.py`` registers the
application (``project.set_model_monitoring_function``).
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

from functions.mlrun_io import label_model, registered_model
from rightsizer.evaluate import load_rows
from rightsizer.monitor import served_report
from rightsizer.reevaluate import LabelFree, label_free_checks
from rightsizer.taskspec import app_task_paths, load_task

ROOT = Path(__file__).resolve().parents[1]
APP_NAME = "served-traffic"
# result name -> (its kind, the report figure, the flag that marks it detected)
RESULTS = {"length_drift": (ResultKindApp.data_drift, "length_drift", "length_drift_flag"),
           "answer_mix_drift": (ResultKindApp.concept_drift, "answer_mix_drift", "answer_mix_flag"),
           "latency_p95_ms": (ResultKindApp.system_performance, "latency_p95_ms", "latency_flag"),
           "agreement": (ResultKindApp.model_performance, "agreement", "agreement_flag"),
           "judged_right": (ResultKindApp.model_performance, "judged_right", "judge_flag")}
EVENTS = {ResultKindApp.data_drift: alert_schemas.EventKind.DATA_DRIFT_DETECTED,
          ResultKindApp.concept_drift: alert_schemas.EventKind.CONCEPT_DRIFT_DETECTED,
          ResultKindApp.model_performance: alert_schemas.EventKind.MODEL_PERFORMANCE_DETECTED,
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
    """Per window of a task model's endpoint: drift, p95 latency and (with ``models``) shadow
    agreement and the judge's verdict, as application results."""

    def __init__(self, app: str = "tasks/demo_app.yaml", models: str = "", shadow: bool = True, judge: bool = True,
                 **kwargs):
        self.specs = task_specs(app)
        self.models, self.shadow, self.judge = models, shadow, judge
        self._checks: dict[str, LabelFree] = {}  # per task, loaded at its first window
        self._reference: dict[str, list[dict]] = {}

    def reference(self, task: str) -> list[dict]:
        """The task's eval split, read once per pod."""
        if task not in self._reference:
            spec = self.specs[task]
            self._reference[task] = load_rows(spec, spec.eval_split, spec.max_eval_examples)
        return self._reference[task]

    def checks(self, task: str) -> LabelFree:
        """The task's label-free references (the shadow and judge models load once per pod)."""
        if task not in self._checks:
            self._checks[task] = (label_free_checks(self.specs[task], self.models, self.shadow, self.judge,
                                                    reference=self.reference(task)) if self.models else LabelFree())
        return self._checks[task]

    def do_tracking(self, monitoring_context: MonitoringApplicationContext) -> list[ModelMonitoringApplicationResult]:
        task = endpoint_task(monitoring_context)
        spec = self.specs.get(task)
        rows = traffic_of(monitoring_context.sample_df, task)
        if spec is None or not rows:  # not a task model of the app, or no requests in the window
            return []
        report = served_report(spec, rows, self.reference(task), window_s=1e12, **self.checks(task).kwargs())
        results = results_of(report)
        if report["regression"]:
            label_model(registered_model(monitoring_context.project_name, task),
                        {"regression": "true", "regression_source": "served"})
        return results


def endpoint_task(monitoring_context) -> str:
    """The task a window belongs to: a task model's endpoint is named after its task."""
    name = getattr(monitoring_context, "endpoint_name", None)
    if name:
        return str(name)
    endpoint = monitoring_context.model_endpoint
    return getattr(getattr(endpoint, "metadata", None), "name", None) or str(endpoint)


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
    """One alert per result kind the application reports (an alert fires on an event kind), on
    the tracked endpoints' results (``endpoint_ids``: all of the project's when None). Storing
    them needs the MLRun API (``project.store_alert_config``); building them does not."""
    configs = []
    for kind in dict.fromkeys(kind for kind, _, _ in RESULTS.values()):
        names = ", ".join(n for n, (k, _, _) in RESULTS.items() if k == kind)
        entities = alert_schemas.EventEntities(kind=alert_schemas.EventEntityKind.MODEL_ENDPOINT_RESULT,
                                               project=project, ids=endpoint_ids or ["*"])
        configs.append(AlertConfig(
            project=project, name=f"{APP_NAME}-{kind.name.replace('_', '-')}",
            summary=f"{{{{project}}}}: {names} detected on a task model's served traffic; re-run size_and_deploy",
            severity=alert_schemas.AlertSeverity.MEDIUM, entities=entities,
            trigger=alert_schemas.AlertTrigger(events=[EVENTS[kind]]),
            criteria=alert_schemas.AlertCriteria(count=1, period="1h")))
    return configs


def register(project: mlrun.projects.MlrunProject, image: str = "mlrun/mlrun", models: str = ""):
    """Register the application on ``project`` (what ``project_setup.py`` calls); ``models``:
    where its pod reads the deployed ``size_and_deploy`` run's artifacts (the shadow and judge
    checks; none without it), the project param ``monitoring_models``."""
    return project.set_model_monitoring_function(name=APP_NAME, func="functions/monitoring_app.py",
                                                 application_class="ServedTrafficApp", image=image,
                                                 app=project.get_param("app", "tasks/demo_app.yaml"), models=models)


__all__ = ["ServedTrafficApp", "alert_configs", "endpoint_task", "register", "results_of", "traffic_of", "APP_NAME"]
