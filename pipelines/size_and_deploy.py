"""Workflow ``size_and_deploy``: select, quantize, evaluate and size every task, plan the
fleet (which task models share which device), deploy one serving function per placement
group and report against the one-big-model baseline.

Only wiring: every step is an MLRun function registered by project_setup.py. The task list
is read when the workflow is built (from the ``app`` argument or project param), so the
fan-out over tasks is static and the same on the local engine and on KFP.

When the ladder chooses the LoRA rung for a task (and its spec's ``finetune`` section is
enabled), ``finetune-<task>`` trains the production adapter with the spec's full budget
(function ``finetune``, handler ``finetune_task``: its own GPU limit, ``finetune_gpus``);
quantize, evaluate and size then take its merged model. On KFP the step sits under a
``dsl.Condition`` on the select step's ``rung``; on the local engine it runs only then.

When a GPU is configured (project param ``gpus`` > 0, or ``prequantize="true"``), each task
whose precisions include int4 also runs ``quantize-gptq`` (its own image) on the selected
model (the production adapter's, for LoRA), and the ``quantize`` step scores that checkpoint
beside the in-place backends.

A task whose bar no candidate reaches does not stop the others: its select step succeeds with
``passed`` false, and its later steps sit under a ``dsl.Condition`` on ``passed`` (on the
local engine they are not run). The plan, report and deploy steps take every task's selection
and read the sized tasks' decision records from the run's layout. The application needs all
its tasks, so then the report is written and the step ``all-tasks-sized`` fails the workflow
before anything is deployed, naming the task and what would be needed; with the argument or
project param ``deploy_partial`` true the sized tasks are deployed instead, and the report
says which task is missing. On KFP both endings sit under conditions on the plan's
``deploy`` output.
"""

from __future__ import annotations

import os

import mlrun
from kfp import dsl

from functions.mlrun_io import has_api
from pipelines.wiring import after, output, run_step, when
from rightsizer.taskspec import app_task_paths, load_task


def wants_gptq(project, prequantize: str = "auto") -> bool:
    """GPTQ pre-quantization runs when a GPU is configured (``gpus`` > 0), or when forced."""
    value = str(prequantize).lower() if isinstance(prequantize, str) else "auto"
    if value not in ("auto", "true", "false"):
        raise ValueError(f"prequantize: {prequantize!r}; expected 'auto', 'true' or 'false'")
    if value == "auto":
        return int(project.get_param("gpus", 0) or 0) > 0
    return value == "true"


@dsl.pipeline(name="size_and_deploy",
              description="Right-size a model per task and deploy them behind one router")
def pipeline(app: str = "", mock_deploy: str = "auto", prequantize: str = "auto",
             deploy_partial: str = "auto"):
    project = mlrun.get_current_project()
    if not isinstance(app, str) or not app:  # on KFP, arguments are placeholders here
        app = project.get_param("app", "tasks/demo_app.yaml")
    gptq = wants_gptq(project, prequantize)
    selections, sized, bundles = [], [], {}
    for name, spec in app_task_paths(app, root=project.context):
        sel = run_step(project, "select", name=f"select-{name}", params={"task_spec": spec},
                       outputs=["selection", "model_dir", "baseline_model", "rung", "passed"])
        selections.append(output(sel, "selection"))
        # A task whose bar no candidate reaches ends here (its select step logs why and what
        # would be needed, and succeeds): its later steps are skipped, the other tasks' run.
        with when(output(sel, "passed"), True) as passed:
            if passed:
                size, quant = _task_steps(project, name, spec, sel, gptq)
                sized.append(size)
                bundles[name] = output(quant, "bundle_dir")
    # The fleet plan packs the sized task models onto the cheapest devices (GPU, MIG slice, CPU
    # instance) and plans the one-big-model baseline fleet on the same price list. It reads
    # the decision records from the run's layout (a step under a condition cannot pass its
    # output on KFP), so it only waits for the size-gpu steps.
    fleet = run_step(project, "plan", params={"selections": selections, "deploy_partial": deploy_partial},
                     outputs=["plan", "groups", "fleet_cost_per_hour", "deploy"])
    after(fleet, *sized)
    report = {"selections": selections, "plan": output(fleet, "plan"), "app": app}
    # Every task sized (or deploy_partial): deploy one serving function per placement group
    # (the flow graph of functions.serving, one engine per task), and with several groups the
    # router (functions.router) as `serving`, the one entry point; then report. On KFP a
    # bundle path is a placeholder until run time, so the deploy names each task's model
    # artifact (the quantize step logs the bundle under the task's name).
    with when(output(fleet, "deploy"), True) as deploying:
        if deploying:
            # "auto": a real Nuclio deploy where an MLRun API is configured, the mock server otherwise
            mock = not has_api() if mock_deploy == "auto" else str(mock_deploy).lower() == "true"
            served = {t: b if isinstance(b, str) else f"store://models/{project.name}/{t}"
                      for t, b in bundles.items()}
            deploy = run_step(project, "plan", name="deploy", handler="deploy_plan",
                              params={"plan": output(fleet, "plan"), "models": served, "mock": mock},
                              outputs=["endpoint", "functions"])
            run_step(project, "report", params={**report, "endpoint": output(deploy, "endpoint")})
    # A task cannot be sized and the application needs all of them: report (the unsized tasks
    # with what would be needed), then fail before deploying, with that message.
    with when(output(fleet, "deploy"), False) as blocked:
        if blocked:
            # its own name: two steps named "report" would be "report" and "report-2" on KFP
            written = run_step(project, "report", name="report-unsized", params=report)
            check = run_step(project, "plan", name="all-tasks-sized", handler="require_all_tasks",
                             params={"selections": selections})
            after(check, written)


def _task_steps(project, name: str, spec: str, sel, gptq: bool):
    """A sized task's steps after select: the production adapter (LoRA), the baseline's and
    the chosen model's evaluation, quantization and sizing; returns the size-gpu and the
    quantize step."""
    task = load_task(os.path.join(project.context, spec))
    # The production adapter, only when the ladder chose LoRA (known at run time: a
    # dsl.Condition on KFP). The steps after it find it in the run's layout (KFP cannot
    # pass a conditional step's output on), so they only wait for it.
    ft = None
    if task.finetune.enabled and "lora" in task.ladder.rungs:
        with when(output(sel, "rung"), "lora") as needed:
            if needed:
                ft = run_step(project, "finetune", name=f"finetune-{name}",
                              handler="finetune_task",
                              params={"task_spec": spec, "selection": output(sel, "selection")},
                              outputs=["model_dir", "production", "score"])
    base = run_step(project, "evaluate", name=f"evaluate-baseline-{name}",
                    params={"task_spec": spec, "label": "baseline",
                            "model": output(sel, "baseline_model")},
                    outputs=["evaluation", "calibration"])
    quant_params = {"task_spec": spec, "selection": output(sel, "selection"),
                    "model_dir": output(sel, "model_dir")}
    if gptq and "int4" in task.precisions:
        pre = run_step(project, "quantize-gptq", name=f"quantize-gptq-{name}",
                       params={"task_spec": spec, "model_dir": output(sel, "model_dir"),
                               "selection": output(sel, "selection")},
                       outputs=["model_dir"])
        after(pre, ft)
        quant_params["gptq_model_dir"] = output(pre, "model_dir")
    quant = run_step(project, "quantize", name=f"quantize-{name}", params=quant_params,
                     outputs=["bundle_dir", "precision"])
    after(quant, ft)
    chosen = run_step(project, "evaluate", name=f"evaluate-{name}",
                      params={"task_spec": spec, "label": "chosen",
                              "model": output(quant, "bundle_dir")},
                      outputs=["evaluation", "calibration"])
    size = run_step(project, "size_gpu", name=f"size-gpu-{name}",
                    params={"task_spec": spec, "selection": output(sel, "selection"),
                            "bundle_dir": output(quant, "bundle_dir"),
                            "precision": output(quant, "precision"),
                            "chosen_evaluation": output(chosen, "evaluation"),
                            "baseline_evaluation": output(base, "evaluation"),
                            "calibration": output(chosen, "calibration"),
                            "baseline_calibration": output(base, "calibration")},
                    outputs=["record"])
    return size, quant
