"""The MLRun handler, run with run_function(local=True): 2 CPU processes through torchrun."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory, demo_models):
    import mlrun

    tmp = tmp_path_factory.mktemp("fn")
    data = tmp / "train.jsonl"
    data.write_text("".join(json.dumps({"text": f"item {i} is {'good' if i % 3 else 'bad'}",
                                        "label": "positive" if i % 3 else "negative"}) + "\n"
                            for i in range(48)))
    fn = mlrun.code_to_function("finetune", filename=str(ROOT / "functions" / "finetune.py"),
                                kind="job", handler="finetune", image="mlrun/mlrun")
    # MLRun 1.12's local runs ignore artifact_path and write under the working directory.
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        run = _run(fn, tmp, data)
    finally:
        os.chdir(cwd)
    return run, tmp


def _run(fn, tmp, data):
    return fn.run(local=True, artifact_path=str(tmp / "artifacts"), params={
        "model": "demo:tiny-s", "train_data": str(data), "nproc": 2, "zero_stage": 0,
        "steps": 4, "micro_batch_size": 4, "global_batch": 8, "save_steps": 2,
        "prompt_template": "Review: {text}\nSentiment:", "key": "sentiment-adapter",
        "output_dir": str(tmp / "ft")})


def test_handler_runs_torchrun_with_two_gloo_processes_on_sharded_data(run):
    r, tmp = run
    assert r.state() == "completed", r.status.error
    res = r.status.results
    assert res["strategy"] == "ddp" and res["world_size"] == 2 and res["final_loss"] > 0
    out = Path(res["adapter_dir"]).parent
    assert out.is_relative_to(tmp)
    ranks = [json.loads((out / "ranks" / f"rank{i}.json").read_text()) for i in (0, 1)]
    for rk in ranks:
        assert rk["dist_world_size"] == rk["args_world_size"] == 2
    assert not set(ranks[0]["seen"][:16]) & set(ranks[1]["seen"][:16])
    # Without an API server the artifacts are registered by key (the store resolves them).
    assert {"training_curves", "sentiment-adapter"} <= set(r.status.artifact_uris)
    html = list(tmp.rglob("training_curves.html"))
    assert html and "learning rate" in html[0].read_text()
    assert list(tmp.rglob("sentiment-adapter/adapter_model.safetensors"))


class _Ctx:
    def __init__(self):
        self.models, self.artifacts, self.results = {}, {}, {}

    def log_model(self, key, **kw):
        self.models[key] = kw

    def log_artifact(self, item, **kw):
        self.artifacts[item.key] = item

    def log_results(self, results):
        self.results.update(results)


def test_handler_logs_adapter_referencing_base_and_plotly_curves(run):
    from functions.finetune import _log_outputs

    r, _ = run
    out = Path(r.status.results["adapter_dir"]).parent
    result = json.loads((out / "result.json").read_text())
    ctx = _Ctx()
    _log_outputs(ctx, result, "ad", {"rank": 8, "nproc": 2, "model": "demo:tiny-s"})
    m = ctx.models["ad"]
    assert m["model_file"] == "adapter_model.safetensors"
    assert Path(m["model_dir"], m["model_file"]).is_file()
    assert "adapter_config.json" in m["extra_data"]
    assert m["labels"]["base_model"] == "demo:tiny-s" and m["algorithm"] == "lora"
    assert m["parameters"]["nproc"] == 2 and m["parameters"]["global_batch"] == 8
    fig = ctx.artifacts["training_curves"]
    assert type(fig).__name__ == "PlotlyArtifact"
    from rightsizer.finetune.report import curves_figure

    traces = curves_figure(result).data
    assert [t.name for t in traces] == ["loss", "learning rate"]
    assert list(traces[0].y) == result["losses"] and len(traces[0].y) == 4
    assert ctx.results["world_size"] == 2 and ctx.results["tokens_per_second"] > 0


def test_rerun_of_the_same_job_resumes_in_the_same_folder(run):
    from rightsizer.finetune.launch import job_id

    p = {"model": "demo:tiny-s", "train_data": [1, 2], "steps": 4, "output_dir": "x"}
    assert job_id(p, 2) == job_id({**p, "output_dir": "y"}, 2)
    assert job_id(p, 2) != job_id(p, 1) != job_id({**p, "steps": 5}, 1)


def test_function_spec_for_gpu_pods_and_mpijob():
    import mlrun

    from functions.finetune import configure_function, mpijob_function

    fn = mlrun.new_function("finetune", kind="job", image="mlrun/mlrun")
    configure_function(fn, gpus=4, shm_gb=32, max_hours=48)
    assert fn.spec.resources["limits"]["nvidia.com/gpu"] == 4
    vols = {v["name"]: v for v in fn.spec.volumes}
    assert vols["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "32Gi"}
    assert any(m["mountPath"] == "/dev/shm" for m in fn.spec.volume_mounts)
    assert fn.spec.state_thresholds["executing"] == "48h"

    project = mlrun.new_project("ft-spec", context=str(ROOT), save=False)
    mpi = mpijob_function(project, replicas=3, gpus_per_replica=8)
    assert mpi.kind == "mpijob" and mpi.spec.replicas == 3
    assert mpi.spec.resources["limits"]["nvidia.com/gpu"] == 8
    assert mpi.spec.default_handler == "mpi_worker"


def test_the_one_node_handler_refuses_to_run_as_one_of_several_mpi_processes(tmp_path, monkeypatch):
    """With finetune_nodes > 1 the finetune function is an MPIJob; its one-node handler would
    train one job per replica, so it refuses, naming the handlers that run on several nodes."""
    import mlrun

    from functions.finetune import finetune

    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "0")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    with pytest.raises(ConfigError, match="MPI started 2: use handler finetune_task .* or mpi_worker"):
        finetune(mlrun.get_or_create_ctx("mpi-probe"), model="demo:tiny-s", train_data=str(tmp_path / "x.jsonl"))
