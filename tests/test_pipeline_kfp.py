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

ROOT = Path(__file__).resolve().parents[1]


def _compile(gpus: int, tmp_path: Path, monkeypatch) -> dict[str, dict]:
    from kfp import compiler
    from mlrun.projects.pipelines import WorkflowSpec, _legacy_pipeline_context as ctx

    monkeypatch.chdir(ROOT)
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False, parameters={"gpus": gpus})
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
    spec = yaml.safe_load(out.read_text())
    return {t["name"]: t for t in spec["spec"]["templates"] if "container" in t}


def _args(template: dict) -> list[str]:
    return template["container"]["command"]


@pytest.mark.parametrize("gpus", [0, 1])
def test_gptq_steps_only_when_a_gpu_is_configured(gpus, tmp_path, monkeypatch):
    steps = _compile(gpus, tmp_path, monkeypatch)
    tasks = ("review-sentiment", "ticket-routing")
    for task in tasks:
        for step in ("select", "evaluate-baseline", "quantize", "evaluate", "size-gpu"):
            assert f"{step}-{task}" in steps
    gptq = sorted(name for name in steps if name.startswith("quantize-gptq-"))
    assert gptq == ([f"quantize-gptq-{t}" for t in tasks] if gpus else [])
    for task in tasks:
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
