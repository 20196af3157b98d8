"""size_and_deploy with a GPU configured: the pipeline adds the quantize-gptq step.

Offline, on the MLRun local engine: project param ``gpus=1`` is what a user sets for a GPU
cluster; here the steps still run on the CPU (local runs ignore GPU limits), GPTQ included,
in its own environment (.venv-gptq). One task keeps it short: answer_drafting, whose chosen
rung retrieves, so the calibration text is the prompt with its passages, as served.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlrun
import pytest

from rightsizer.layout import RunLayout
from tests.test_gptq import _gptq_python

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(demo_models, tmp_path_factory):
    gptq_python = _gptq_python()
    tmp = tmp_path_factory.mktemp("gpu-configured")
    app = tmp / "app.yaml"
    app.write_text(f"name: drafting-only\ntasks:\n  - {ROOT / 'tasks' / 'answer_drafting.yaml'}\n")
    old = os.environ.get("RIGHTSIZER_GPTQ_PYTHON")
    os.environ["RIGHTSIZER_GPTQ_PYTHON"] = gptq_python
    try:
        project = mlrun.load_project(str(ROOT), name="rightsizer", save=False, parameters={"gpus": 1})
        status = project.run("size_and_deploy", arguments={"app": str(app)}, artifact_path=str(tmp / "a"),
                             watch=True, dirty=True)
    finally:
        if old is None:
            os.environ.pop("RIGHTSIZER_GPTQ_PYTHON")
        else:
            os.environ["RIGHTSIZER_GPTQ_PYTHON"] = old
    assert str(status.state).lower() in ("completed", "succeeded"), status.state
    return project, RunLayout(tmp / "a")


def test_gptq_step_ran_and_its_checkpoint_was_scored(run):
    project, layout = run
    assert project.get_function("quantize-gptq").spec.resources["limits"]["nvidia.com/gpu"] == 1
    ckpt = layout.prequant_model_dir("answer_drafting", "gptq")
    qcfg = json.loads((ckpt / "quantize_config.json").read_text())
    assert (qcfg["bits"], qcfg["group_size"]) == (4, 64)  # tiny-s is 64 wide
    # calibrated on what the retrieval rung serves: each text is a prompt with its passage
    texts = json.loads(layout.calibration_texts_file("answer_drafting", "gptq").read_text())
    assert texts and all(t.startswith("Context:\n") and "\n\nQuestion: " in t for t in texts)
    rows = json.loads(layout.decisions_file().read_text())["records"][0]["precision_search"]
    gptq = [r for r in rows if r["backend"] == "gptq"]
    assert len(gptq) == 1 and gptq[0]["status"] == "evaluated" and 0.0 <= gptq[0]["score"] <= 1.0
    rtn = next(r for r in rows if r["backend"] == "torch-int4pack" and not r["mixed"])
    assert gptq[0]["memory_bytes"] == rtn["memory_bytes"]  # same group size, same bytes


def test_the_kept_model_is_bundled_and_serves(run):
    project, layout = run
    bundle = layout.bundle_dir("answer_drafting")
    meta = json.loads((bundle / "rightsizer.json").read_text())
    # equal bytes: the higher score is kept, so GPTQ wins unless round-to-nearest scored higher
    assert meta["quant_config"]["precision"] == "int4"
    assert meta["quant_config"].get("pre_quantized", False) == (meta["quant_config"]["backend"] == "gptq")
    serving = project.get_function("serving")
    from functions.serving import set_task_models

    set_task_models(serving, {"answer_drafting": str(bundle)})
    server = serving.to_mock_server()
    rows = [json.loads(line) for line in (ROOT / "tasks/data/answer_drafting/eval.jsonl").read_text().splitlines()]
    answer = server.test("/v2/models/answer_drafting/infer", body={"inputs": [r["text"] for r in rows[:4]]})
    server.wait_for_completion()  # ends the async flow's loop thread
    evaluation = json.loads(layout.evaluation_file("answer_drafting", "chosen").read_text())
    assert [o["generated"] for o in answer["outputs"]] == evaluation["predictions"][:4]
