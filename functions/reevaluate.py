"""MLRun step ``reevaluate``: a deployed task model on fresh data vs its registered score."""

from __future__ import annotations

from pathlib import Path

import mlrun

from functions.mlrun_io import (current_project, label_model, localize_dir, log_plot, log_results, log_table, project_file,
                                registered_model)
from rightsizer.layout import RunLayout, latest_run
from rightsizer.monitor import served_figure
from rightsizer.reevaluate import reevaluate_bundle, reevaluate_served
from rightsizer.taskspec import load_task
from rightsizer.unsized import not_deployed_reason


def reevaluate(context: mlrun.MLClientCtx, task_spec: str, fresh_split: str = "fresh",
               models: str = "", source: str = "fresh", traffic_log: str = "", window_s: float = 3600.0,
               shadow: bool = True, judge: bool = True) -> None:
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

    ``source="served"``: no labels. The served-traffic record (``traffic_log``; default the
    project's ``traffic_log`` param, else ``artifacts/traffic.jsonl``) of the run at ``models``
    against the task's eval split, per ``window_s`` seconds: input-length and answer-mix drift,
    p95 latency against the SLO, a cascade's deferral share, (``shadow``) agreement with the
    run's baseline model answering the same inputs and (``judge``, where the spec names a judge
    model) the share of answers the judge calls right (``rightsizer.monitor``). A flagged task's
    registered model gets ``regression=true`` too, where an MLRun API keeps it.
    """
    spec = load_task(project_file(task_spec))
    if source not in ("fresh", "served"):
        raise ValueError(f"source: {source!r}; expected fresh (a labelled split) or served (the traffic record)")
    if models and not mlrun.datastore.is_store_uri(models) and Path(project_file(models)).is_dir():
        models = str(latest_run(project_file(models)))  # a folder of runs: the latest one
    if models and (reason := not_deployed_reason(models, spec.name)):
        context.logger.warning(f"{spec.name}: {reason}")
        log_results(context, {"deployed": False, "regression": False, "action": reason})
        return
    if source == "served":
        _served(context, spec, models, traffic_log, window_s, shadow, judge)
        return
    if not models:
        model_uri = registered_model(context.project, spec.name)
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
        label_model(model_uri, {"regression": "true"})


def _served(context: mlrun.MLClientCtx, spec, models: str, traffic_log: str, window_s: float, shadow: bool,
            judge: bool) -> None:
    """The served-source check (``rightsizer.reevaluate.reevaluate_served``) of a local run's
    deployment: table ``served_monitoring`` (a row per window), chart ``served_chart``, results
    ``requests``, ``flags``, ``regression``, ``action`` and the references held to
    (``reference_agreement``, ``reference_judged_right``, ``shadow_model``, ``judge_model``)."""
    if not models or mlrun.datastore.is_store_uri(models):
        raise ValueError("source served: models must be a local size_and_deploy run (its artifact path), "
                         "whose decision records and evaluations name the shadow model")
    log = project_file(traffic_log or (current_project(context).get_param("traffic_log", "") if current_project(context)
                                       else "") or "artifacts/traffic.jsonl")
    out = reevaluate_served(spec, models, log, window_s=float(window_s), shadow=bool(shadow), judge=bool(judge))
    if out["windows"]:
        refs = {k: out.get(k) for k in ("reference_agreement", "reference_judged_right", "shadow_model", "judge_model")}
        log_table(context, "served_monitoring", [{"task": spec.name, **w, **refs} for w in out["windows"]])
        log_plot(context, "served_chart", served_figure(out))
    else:
        context.logger.info(out["action"])
    log_results(context, {"deployed": True, "source": "served", "requests": out["requests"],
                          "flags": out["flags"], "regression": out["regression"], "action": out["action"],
                          **{k: out.get(k) for k in ("reference_agreement", "reference_judged_right", "shadow_model",
                                                     "judge_model")}})
    if out["regression"]:
        context.logger.warning(f"SERVED TRAFFIC on {spec.name}: {out['action']}")
        label_model(registered_model(context.project, spec.name), {"regression": "true", "regression_source": "served"})
