"""A failing step stops the local workflow with its name (MLRun's local engine would
otherwise wait forever for a failed run that the offline NopDB never marks as failed)."""

from __future__ import annotations

import threading
from pathlib import Path

import mlrun
import pytest

from pipelines.wiring import run_step

ROOT = Path(__file__).resolve().parents[1]


def test_failed_local_step_raises_and_is_terminal():
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    # one line: the step (which names the task) and the reason MLRun logged for it
    with pytest.raises(RuntimeError, match=r"^step 'select-bad' failed: .*tasks/nope\.yaml") as e:
        run_step(project, "select", name="select-bad", params={"task_spec": "tasks/nope.yaml"},
                 local=True)
    assert "\n" not in str(e.value)


def test_workflow_with_a_failing_step_fails_instead_of_hanging(tmp_path):
    import yaml

    spec = yaml.safe_load((ROOT / "tasks" / "ticket_routing.yaml").read_text())
    spec["dataset"] = {k: str(ROOT / "tasks" / v) for k, v in spec["dataset"].items()}
    spec["candidates"] = ["./no/such/model"]  # the select step raises on it
    (tmp_path / "task.yaml").write_text(yaml.safe_dump(spec))
    bad = tmp_path / "app.yaml"
    bad.write_text("name: x\ntasks: [task.yaml]\n")
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    result = {}

    def go():
        result["status"] = project.run("size_and_deploy", arguments={"app": str(bad)},
                                       artifact_path=str(tmp_path / "a"), watch=False, dirty=True)

    t = threading.Thread(target=go, daemon=True)
    t.start()
    t.join(timeout=300)
    assert not t.is_alive(), "workflow hung"
    assert str(result["status"].state).lower() == "failed"
    # the workflow's error says which step of which task failed, and why
    assert "step 'select-ticket_routing' failed: " in str(result["status"].exc) and "no/such/model" in str(result["status"].exc)
