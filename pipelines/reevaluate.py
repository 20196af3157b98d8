"""Workflow ``reevaluate`` (scheduled): each deployed task model against fresh data.

Compares the fresh score with the score registered at selection time and flags a
regression beyond the task's tolerance (in the run's results and the model's labels).
``source="served"``: no labels; the served-traffic record (``traffic_log``, written by
``scripts/serve.sh --traffic-log``) against the eval split: drift, p95 latency against the SLO,
agreement with the baseline model answering the same inputs (``rightsizer.monitor``).
"""

from __future__ import annotations

import mlrun
from kfp import dsl

from functions.mlrun_io import app_of_run
from pipelines.wiring import run_step
from rightsizer.taskspec import app_task_paths


@dsl.pipeline(name="reevaluate", description="Re-check deployed task models on fresh data")
def pipeline(app: str = "", fresh_split: str = "fresh", models: str = "", source: str = "fresh",
             traffic_log: str = ""):
    project = mlrun.get_current_project()
    if not isinstance(app, str) or not app:
        # the app the deployed run sized (its report says), else the project's
        app = app_of_run(models) or project.get_param("app", "tasks/demo_app.yaml")
    for name, spec in app_task_paths(app, root=project.context):
        run_step(project, "reevaluate", name=f"reevaluate-{name}",
                 params={"task_spec": spec, "fresh_split": fresh_split, "models": models, "source": source,
                         "traffic_log": traffic_log})
