"""The runtime target reaches every load of the select and evaluate steps, run through MLRun
(local engine): the steps resolve it on the machine they run on, and ``dtype`` set to bf16 on
this CPU shows in what was loaded (the saved chosen model's dtype, the weights' bytes) and in
what the records say, not only in a parameter."""

from __future__ import annotations

import json
from pathlib import Path

import mlrun
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def project():
    return mlrun.load_project(str(ROOT), name="rightsizer", save=False)


def _in(monkeypatch, folder: Path) -> None:
    """The run's artifact path (MLRun's config keeps its values in _cfg)."""
    monkeypatch.setitem(mlrun.mlconf._cfg, "artifact_path", str(folder))


def _evaluate(project, tmp: Path, dtype: str, monkeypatch) -> dict:
    _in(monkeypatch, tmp / dtype)
    run = project.run_function("evaluate", local=True, params={
        "task_spec": "tasks/ticket_routing.yaml", "model": "demo:tiny-s", "label": f"m-{dtype}",
        "repeats": 1, "batch_sizes": [1], "dtype": dtype})
    assert run.status.state == "completed", run.status.error
    report = json.loads(Path(run.status.results["evaluation"]).read_text())
    assert run.status.results["target"] == f"{report['target']['measured_on']} (cpu, {report['target']['dtype']})"
    return report


def test_evaluate_loads_on_the_resolved_target_and_says_so(project, demo_models, tmp_path, monkeypatch):
    auto = _evaluate(project, tmp_path, "auto", monkeypatch)
    assert auto["target"]["device"] == "cpu" and auto["target"]["dtype"] == "float32" and auto["precision"] == "fp32"
    half = _evaluate(project, tmp_path, "bfloat16", monkeypatch)
    assert half["target"]["dtype"] == "bfloat16" and half["precision"] == "bf16"
    # the weights really loaded in bf16: about half the bytes of the fp32 load (buffers such as
    # the rotary frequencies stay fp32)
    assert 0.5 <= half["weights_bytes"] / auto["weights_bytes"] < 0.55
    cpu = auto["target"]["device_name"]
    assert all(row["measured_on"] == cpu for row in auto["latency_by_batch"])


def test_select_loads_every_candidate_on_the_target(project, demo_models, tmp_path, monkeypatch):
    _in(monkeypatch, tmp_path)
    run = project.run_function("select", local=True, params={
        "task_spec": "tasks/ticket_routing.yaml", "latency_repeats": 1, "dtype": "bf16"})
    assert run.status.state == "completed", run.status.error
    sel = json.loads(Path(run.status.results["selection"]).read_text())
    assert sel["target"]["dtype"] == "bfloat16" and sel["target"]["device"] == "cpu"
    # the chosen candidate was loaded (and saved) in bf16, as the target said
    config = json.loads((Path(sel["model_dir"]) / "config.json").read_text())
    assert config.get("dtype", config.get("torch_dtype")) == "bfloat16"
    assert "(cpu, bfloat16)" in run.status.results["target"]
