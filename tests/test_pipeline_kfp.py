"""size_and_deploy compiled for Kubeflow Pipelines, as a cluster run would compile it.

The KFP compiler and MLRun's KFP step builder run for real; the one thing replaced is the
MLRun API (saving each function to its DB, which a step then runs by ``db://`` URI). On a
cluster each step's container runs ``mlrun run -f db://<project>/<function>``, which
submits the function with its own image and GPU limits (checked in test_project_spec.py).
"""

from __future__ import annotations

import importlib
from pathlib import Path

import mlrun
import pytest
import yaml

from rightsizer.taskspec import app_task_paths

ROOT = Path(__file__).resolve().parents[1]
# the demo app's tasks, as the pipeline names their steps (a task added to the app is covered)
TASKS = tuple(name.replace("_", "-") for name, _ in app_task_paths("tasks/demo_app.yaml", root=str(ROOT)))


def _compile(gpus: int, tmp_path: Path, monkeypatch) -> dict[str, dict]:
    spec = _workflow(gpus, tmp_path, monkeypatch)
    return {t["name"]: t for t in spec["spec"]["templates"] if "container" in t}


def _workflow(gpus: int, tmp_path: Path, monkeypatch, **params) -> dict:
    """The compiled Argo workflow (every template: containers and DAGs)."""
    from kfp import compiler
    from mlrun.projects.pipelines import WorkflowSpec, _legacy_pipeline_context as ctx

    monkeypatch.chdir(ROOT)
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False,
                                 parameters={"gpus": gpus, **params})
    # a cluster: a KFP endpoint is configured and steps are not run locally
    monkeypatch.setitem(mlrun.mlconf._cfg, "kfp_url", "http://kfp.invalid")
    monkeypatch.setitem(mlrun.mlconf._cfg, "force_run_local", "false")
    monkeypatch.setattr(mlrun.runtimes.base.BaseRuntime, "save",  # the MLRun API's function store
                        lambda self, tag="", versioned=False, refresh=False:
                        f"db://{project.name}/{self.metadata.name}")
    workflow = WorkflowSpec(engine="kfp")
    workflow.run_local = False
    ctx.set(project, workflow)
    try:
        module = importlib.import_module("pipelines.size_and_deploy")
        out = tmp_path / f"size_and_deploy-{gpus}.yaml"
        compiler.Compiler().compile(module.pipeline, str(out))
    finally:
        ctx.clear(with_project=True)
    return yaml.safe_load(out.read_text())


def _args(template: dict) -> list[str]:
    return template["container"]["command"]


@pytest.mark.parametrize("gpus", [0, 1])
def test_gptq_steps_only_when_a_gpu_is_configured(gpus, tmp_path, monkeypatch):
    steps = _compile(gpus, tmp_path, monkeypatch)
    tasks = sorted(TASKS)  # as gptq below
    assert len(tasks) == 5 and "chat-routing" in tasks  # the app read, not an empty loop
    for task in tasks:
        for step in ("select", "evaluate-baseline", "quantize", "evaluate", "size-gpu"):
            assert f"{step}-{task}" in steps
    gptq = sorted(name for name in steps if name.startswith("quantize-gptq-"))
    assert gptq == ([f"quantize-gptq-{t}" for t in tasks] if gpus else [])
    for task in tasks:
        # size-gpu calibrates from both evaluate steps' measurements (the chosen and the baseline model)
        size = _args(steps[f"size-gpu-{task}"])
        assert f"calibration={{{{inputs.parameters.evaluate-{task}-calibration}}}}" in size
        assert f"baseline_calibration={{{{inputs.parameters.evaluate-baseline-{task}-calibration}}}}" in size
        quantize = _args(steps[f"quantize-{task}"])
        fed = f"gptq_model_dir={{{{inputs.parameters.quantize-gptq-{task}-model_dir}}}}"
        assert (fed in quantize) == bool(gpus)
        if gpus:
            cmd = _args(steps[f"quantize-gptq-{task}"])
            assert cmd[cmd.index("-f") + 1] == "db://rightsizer/quantize-gptq"
            assert f"model_dir={{{{inputs.parameters.select-{task}-model_dir}}}}" in cmd


def test_every_step_runs_a_registered_function(tmp_path, monkeypatch):
    steps = _compile(1, tmp_path, monkeypatch)
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False, parameters={"gpus": 1})
    registered = {f["name"] for f in project.spec.functions}
    for name, template in steps.items():
        cmd = _args(template)
        if "-f" in cmd:
            assert cmd[cmd.index("-f") + 1].split("/")[-1] in registered, name


def test_prequantize_argument(monkeypatch):
    from pipelines.size_and_deploy import wants_gptq

    monkeypatch.chdir(ROOT)
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False, parameters={"gpus": 0})
    assert [wants_gptq(project, v) for v in ("auto", "true", "false", "TRUE")] == [False, True, False, True]
    project.spec.params["gpus"] = 2
    assert wants_gptq(project, "auto") and not wants_gptq(project, "false")
    with pytest.raises(ValueError, match="prequantize: 'yes'; expected 'auto', 'true' or 'false'"):
        wants_gptq(project, "yes")


def _dags(spec: dict) -> dict[str, dict[str, dict]]:
    """Every DAG template of a compiled workflow: name -> its tasks by name."""
    return {t["name"]: {x["name"]: x for x in t["dag"]["tasks"]} for t in spec["spec"]["templates"] if "dag" in t}


def _dag_of(dags: dict, task: str) -> tuple[str, dict]:
    """The DAG that holds ``task``: its name and its tasks."""
    return next((name, tasks) for name, tasks in dags.items() if task in tasks)


def test_finetune_step_runs_under_a_condition_on_the_chosen_rung(tmp_path, monkeypatch):
    spec = _workflow(0, tmp_path, monkeypatch, finetune_gpus=2)
    templates = {t["name"]: t for t in spec["spec"]["templates"]}
    dags = _dags(spec)
    for task in ("review-sentiment", "ticket-routing"):  # both specs have a LoRA rung
        assert f"finetune-{task}" not in dags["size-and-deploy"]  # never in the main DAG ...
        # ... but under a condition on select's rung, beside the task's quantize step (both
        # inside the task's condition on select's `passed`)
        name, tasks = _dag_of(dags, f"quantize-{task}")
        conds = [t for t in tasks.values() if f"select-{task}-rung" in (t.get("when") or "")]
        assert len(conds) == 1, conds
        cond = conds[0]
        assert cond["when"] == f'"{{{{inputs.parameters.select-{task}-rung}}}}" == "lora"'
        assert list(dags[cond["name"]]) == [f"finetune-{task}"]
        cmd = _args(templates[f"finetune-{task}"])
        assert cmd[cmd.index("-f") + 1] == "db://rightsizer/finetune"
        assert cmd[cmd.index("--handler") + 1] == "finetune_task"
        assert f"selection={{{{inputs.parameters.select-{task}-selection}}}}" in cmd
        # quantize waits for it: it reads the production adapter from the run's layout
        assert cond["name"] in tasks[f"quantize-{task}"]["dependencies"]
    # the step submits the finetune function: its own GPU limit, /dev/shm, a long run time
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False,
                                 parameters={"gpus": 0, "finetune_gpus": 2})
    fn = project.get_function("finetune")
    assert int(fn.spec.resources["limits"]["nvidia.com/gpu"]) == 2
    assert not (project.get_function("quantize").spec.resources or {}).get("limits", {}).get(
        "nvidia.com/gpu")
    assert {m["name"]: m["mountPath"] for m in fn.spec.volume_mounts}["dshm"] == "/dev/shm"
    assert fn.spec.state_thresholds["executing"].endswith("h")


def test_finetune_nodes_run_the_step_as_an_mpijob(tmp_path, monkeypatch):
    """finetune_nodes=2: the same step (db://.../finetune, handler finetune_task) submits an
    MPIJob with one replica per node, each with the finetune_gpus limit and /dev/shm."""
    spec = _workflow(0, tmp_path, monkeypatch, finetune_gpus=4, finetune_nodes=2)
    templates = {t["name"]: t for t in spec["spec"]["templates"]}
    cmd = _args(templates["finetune-review-sentiment"])
    assert cmd[cmd.index("-f") + 1] == "db://rightsizer/finetune"
    assert cmd[cmd.index("--handler") + 1] == "finetune_task"
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False,
                                 parameters={"gpus": 0, "finetune_gpus": 4, "finetune_nodes": 2})
    fn = project.get_function("finetune")
    assert fn.kind == "mpijob" and fn.spec.replicas == 2
    assert int(fn.spec.resources["limits"]["nvidia.com/gpu"]) == 4
    assert {m["name"]: m["mountPath"] for m in fn.spec.volume_mounts}["dshm"] == "/dev/shm"
    assert fn.spec.state_thresholds["executing"].endswith("h")
    assert fn.spec.default_handler == "finetune"  # the pipeline's step names finetune_task
    # one node: a plain job, as before
    one = mlrun.load_project(str(ROOT), name="rightsizer", save=False, parameters={"finetune_nodes": 1})
    assert one.get_function("finetune").kind == "job"
    with pytest.raises(ValueError, match="finetune_nodes: 0; expected a node count >= 1"):
        mlrun.load_project(str(ROOT), name="rightsizer", save=False, parameters={"finetune_nodes": 0})


def test_negative_finetune_gpus_is_a_clear_error(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ValueError, match="finetune_gpus: -1; expected a GPU count >= 0"):
        mlrun.load_project(str(ROOT), name="rightsizer", save=False,
                           parameters={"finetune_gpus": -1})


TASK_STEPS = ("evaluate-baseline", "quantize", "evaluate", "size-gpu")


def test_the_fleet_plan_feeds_the_deploy_and_the_report(tmp_path, monkeypatch):
    steps = _compile(0, tmp_path, monkeypatch)
    plan, deploy, report = (_args(steps[n]) for n in ("plan", "deploy", "report"))
    assert plan[plan.index("-f") + 1] == "db://rightsizer/plan"
    for task in TASKS:  # every task's selection (the sized tasks' records come from the layout)
        assert any(f"select-{task}-selection" in a for a in plan)
        assert any(f"select-{task}-selection" in a for a in report)
        assert not any(f"size-gpu-{task}" in a for a in plan + report + deploy)
    assert "deploy_partial={{inputs.parameters.deploy_partial}}" in plan
    assert "plan={{inputs.parameters.plan-plan}}" in deploy and "deploy_plan" in " ".join(deploy)
    assert any("store://models/rightsizer/ticket_routing" in a for a in deploy)  # artifacts, not paths
    assert "plan={{inputs.parameters.plan-plan}}" in report
    assert "endpoint={{inputs.parameters.deploy-endpoint}}" in report


def test_one_task_that_cannot_be_sized_does_not_stop_its_siblings(tmp_path, monkeypatch):
    """Each task's steps after select sit under their own condition on that select's `passed`
    (a select step whose bar no candidate reaches succeeds with passed false), so a skipped
    task skips only its own steps. Nothing after them references a skipped step's output
    (Argo cannot resolve one): the plan waits for every task's condition and reads the records
    from the run's layout; deploy and report run only where the plan says deploy, and
    otherwise the report is written and `all-tasks-sized` fails, before any deploy."""
    spec = _workflow(0, tmp_path, monkeypatch)
    templates = {t["name"]: t for t in spec["spec"]["templates"]}
    dags = _dags(spec)
    main = dags["size-and-deploy"]
    task_conds = {}
    for task in TASKS:
        assert f"select-{task}" in main and not main[f"select-{task}"].get("dependencies")
        name, tasks = _dag_of(dags, f"size-gpu-{task}")
        cond = main[name]
        assert cond["when"] == (f'"{{{{tasks.select-{task}.outputs.parameters.select-{task}-passed}}}}" '
                                '== "True"')
        assert cond["dependencies"] == [f"select-{task}"]  # on its own select only, no sibling
        assert {f"{s}-{task}" for s in TASK_STEPS} <= set(tasks)
        assert not [t for t in tasks if not t.endswith(task) and not t.startswith("condition-")]
        task_conds[task] = name
    # the plan waits for every task's condition (a skipped one counts as done) and its select
    assert set(main["plan"]["dependencies"]) == set(task_conds.values()) | {f"select-{t}" for t in TASKS}
    plan_in = {p["name"] for p in templates["plan"]["inputs"]["parameters"]}
    assert plan_in == {f"select-{t}-selection" for t in TASKS} | {"deploy_partial"}
    # the two endings, on the plan's `deploy` result
    deploying, blocked = (next(t for t in main.values() if t.get("when") == (
        f'"{{{{tasks.plan.outputs.parameters.plan-deploy}}}}" == "{v}"')) for v in ("True", "False"))
    assert set(dags[deploying["name"]]) == {"deploy", "report"}
    assert dags[deploying["name"]]["report"]["dependencies"] == ["deploy"]
    ending = dags[blocked["name"]]
    assert set(ending) == {"report-unsized", "all-tasks-sized"}
    assert ending["all-tasks-sized"]["dependencies"] == ["report-unsized"]  # fails after the report
    cmd = _args(templates["all-tasks-sized"])
    assert cmd[cmd.index("-f") + 1] == "db://rightsizer/plan"
    assert cmd[cmd.index("--handler") + 1] == "require_all_tasks"
    report_cmd = _args(templates["report-unsized"])
    assert report_cmd[report_cmd.index("-f") + 1] == "db://rightsizer/report"
    assert not any("endpoint=" in a for a in report_cmd)  # no deploy to wait for
    # no step outside a task's condition takes an output of a step inside it
    inside = {t for name in task_conds.values() for t in dags[name]} | {
        t for name, tasks in dags.items() if name.startswith("condition-") for t in tasks
        if any(t.endswith(task) for task in TASKS)}
    for name in ("plan", "deploy", "report", "report-unsized", "all-tasks-sized"):
        args = " ".join(_args(templates[name]))
        assert not [t for t in inside if f"{t}-" in args and not t.startswith("select-")], name
