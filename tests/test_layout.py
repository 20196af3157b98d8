"""RunLayout: the documented artifact layout of a run, and the readers that find its outputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rightsizer.bundle import read_bundle, write_bundle
from rightsizer.layout import RunLayout, find_bundles, find_decisions


def test_paths_are_the_documented_layout(tmp_path):
    lay = RunLayout(tmp_path)
    base = tmp_path / "rightsizer"
    assert lay.base == base
    assert lay.step_dir("t", "quantize") == base / "t" / "quantize"
    assert lay.selection_file("t") == base / "t" / "select" / "selection.json"
    assert lay.select_dir("t") == base / "t" / "select"
    assert lay.evaluation_file("t", "chosen") == base / "t" / "evaluate-chosen" / "evaluation.json"
    assert lay.calibration_file("t", "chosen") == (base / "t" / "evaluate-chosen"
                                                   / "calibration_measurements.json")
    assert lay.prequant_model_dir("t", "gptq") == base / "t" / "quantize-gptq" / "model"
    assert lay.calibration_texts_file("t", "awq") == base / "t" / "quantize-awq" / "calibration.json"
    assert lay.bundle_dir("t") == base / "t" / "quantize" / "bundle"
    assert lay.decision_file("t") == base / "t" / "size_gpu" / "decision.json"
    assert lay.decisions_file() == base / "report" / "decisions.json"
    assert lay.finetune_dir("adapter-1a2b") == base / "finetune" / "adapter-1a2b"


def test_root_may_be_a_string_and_the_layout_is_a_value(tmp_path):
    assert RunLayout(str(tmp_path)) == RunLayout(tmp_path)
    assert RunLayout(str(tmp_path)).bundle_dir("t") == RunLayout(tmp_path).bundle_dir("t")
    assert hash(RunLayout(str(tmp_path))) == hash(RunLayout(tmp_path))


def test_find_bundles_finds_what_write_bundle_wrote(tmp_path, routing_spec, sentiment_spec):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    lay = RunLayout(tmp_path / "artifacts")
    assert find_bundles(lay.root) == {} and lay.tasks() == []
    for spec in (routing_spec, sentiment_spec):
        write_bundle(model, spec, lay.bundle_dir(spec.name), base_model="demo:tiny-s", rung="zero_shot")
    # the report and finetune folders sit beside the tasks and are not tasks
    lay.decisions_file().parent.mkdir(parents=True)
    lay.decisions_file().write_text("{}")
    lay.finetune_dir("adapter-x").mkdir(parents=True)
    # a task whose quantize step has not finished has no bundle yet
    lay.quantize_dir("unfinished").mkdir(parents=True)
    found = find_bundles(str(lay.root))
    assert found == {"review_sentiment": lay.bundle_dir("review_sentiment"),
                     "ticket_routing": lay.bundle_dir("ticket_routing")}
    assert {t: read_bundle(p)["task"] for t, p in found.items()} == {t: t for t in found}
    assert lay.tasks() == ["review_sentiment", "ticket_routing", "unfinished"]


def test_find_decisions(tmp_path):
    lay = RunLayout(tmp_path)
    assert find_decisions(tmp_path) == {}
    path = lay.decision_file("ticket_routing")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"task": "ticket_routing"}))
    lay.size_gpu_dir("review_sentiment").mkdir(parents=True)  # step started, no record yet
    assert find_decisions(tmp_path) == {"ticket_routing": path}


def test_the_layout_module_imports_no_mlrun():
    code = "import sys, rightsizer.layout; assert 'mlrun' not in sys.modules, 'mlrun imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[1])


def test_latest_run_is_the_folder_of_runs_newest_and_says_its_app(tmp_path):
    import os

    from rightsizer.layout import latest_run, run_app

    assert latest_run(tmp_path / "nowhere") == tmp_path / "nowhere"
    assert latest_run(tmp_path) == tmp_path  # no run here: the caller says what it did not find
    for i, run in enumerate(("0a1b", "9f8e")):  # a bare project.run writes artifacts/<run id>/
        layout = RunLayout(tmp_path / run)
        layout.decision_file("t").parent.mkdir(parents=True)
        layout.decisions_file().parent.mkdir(parents=True)
        layout.decisions_file().write_text(json.dumps({"app": f"tasks/app{i}.yaml", "records": []}))
        os.utime(layout.decisions_file(), (1000 + i, 1000 + i))
    (tmp_path / ".rightsizer-steps" / "rightsizer" / "x").mkdir(parents=True)  # never a run
    assert latest_run(tmp_path) == tmp_path / "9f8e" and run_app(tmp_path) == "tasks/app1.yaml"
    os.utime(RunLayout(tmp_path / "0a1b").decisions_file(), (3000, 3000))  # a rerun finished later
    assert latest_run(tmp_path) == tmp_path / "0a1b" and run_app(tmp_path) == "tasks/app0.yaml"
    assert latest_run(tmp_path / "9f8e") == tmp_path / "9f8e"  # a run's own folder is itself
    # an explicit artifact_path (the demo's): the run at the root, newer than the others
    root = RunLayout(tmp_path)
    root.decision_file("t").parent.mkdir(parents=True)
    assert latest_run(tmp_path) == tmp_path and run_app(tmp_path) is None  # no report yet: no app
