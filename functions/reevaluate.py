"""MLRun step ``reevaluate``: a deployed task model on fresh data vs its registered score."""

from __future__ import annotations

from pathlib import Path

import mlrun

from functions.mlrun_io import log_results, localize_dir, log_table, project_file
from rightsizer.layout import RunLayout, latest_run
from rightsizer.reevaluate import reevaluate_bundle
from rightsizer.taskspec import load_task
from rightsizer.unsized import not_deployed_reason


def reevaluate(context: mlrun.MLClientCtx, task_spec: str, fresh_split: str = "fresh",
               models: str = "") -> None:
    """Re-evaluate the task's registered model on ``fresh_split`` (a split name or data path).

    ``models``: where the deployed models are: "" for the registered model
    ``store://models/<project>/<task>`` (needs an MLRun API), or the artifact path of a local
    size_and_deploy run (the task's bundle is ``RunLayout(models).bundle_dir(task)``:
    ``<models>/rightsizer/<task>/quantize/bundle``), or a folder of runs (``<models>/<run id>/``,
    where a bare ``project.run`` writes): the latest run. Logs ``reevaluation`` (table) and results
    ``fresh_score``, ``registered_score``, ``drop``, ``regression`` and ``action``; on a
    regression the model artifact gets the label ``regression=true`` (where an MLRun DB is).
    A task that run could not size (deployed without it, ``deploy_partial``) is not an error:
    results ``deployed`` false and ``action`` saying why, so the other tasks' steps still run.
    """
    spec = load_task(project_file(task_spec))
    if models and not mlrun.datastore.is_store_uri(models) and Path(project_file(models)).is_dir():
        models = str(latest_run(project_file(models)))  # a folder of runs: the latest one
    if models and (reason := not_deployed_reason(models, spec.name)):
        context.logger.warning(f"{spec.name}: {reason}")
        log_results(context, {"deployed": False, "regression": False, "action": reason})
        return
    if not models:
        model_uri = f"store://models/{context.project}/{spec.name}"
    elif (bundle := RunLayout(Path(models)).bundle_dir(spec.name)).is_dir():
        model_uri = str(bundle)
    else:
        model_uri = models
    out = reevaluate_bundle(spec, localize_dir(model_uri), project_file(fresh_split))
    log_table(context, "reevaluation", [{k: v for k, v in out.items() if k != "latency"}])
    log_results(context, {"deployed": True, **{k: out[k] for k in (
        "fresh_score", "registered_score", "drop", "regression", "action")}})
    if out["regression"]:
        context.logger.warning(f"REGRESSION on {spec.name}: {out['action']}")
        if mlrun.datastore.is_store_uri(model_uri):
            _, artifact, _ = mlrun.artifacts.get_model(model_uri)
            artifact.metadata.labels["regression"] = "true"
            mlrun.get_run_db().store_artifact(artifact.spec.db_key, artifact.to_dict(),
                                              project=context.project)
