"""size_and_deploy on an extraction task with named fields, end to end on the local engine.

The task is the demo's order extraction without the order id (which the tiny demo models do
not learn to copy, docs/selection.md): product and issue, both from a closed list. LoRA
teaches the tiny model the answer's format; the bar is low on purpose: this checks the
wiring of every step for an extraction task (scoring parsed fields, the production adapter,
the precision search, the decision record, serving the parsed fields), not the models.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlrun
import pytest
import yaml

from rightsizer.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _triage_task(folder: Path) -> Path:
    """tasks/order_extraction.yaml with product and issue only, its data with the ids cut."""
    for split in ("train", "eval", "fresh"):
        rows = [json.loads(line) for line in
                (ROOT / "tasks" / "data" / "order_extraction" / f"{split}.jsonl").read_text().splitlines()]
        out = folder / "data" / f"{split}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("".join(json.dumps({"text": r["text"], "answer": "; ".join(
            p for p in r["answer"].split("; ") if not p.startswith("order_id"))}) + "\n" for r in rows))
    spec = yaml.safe_load((ROOT / "tasks" / "order_extraction.yaml").read_text())
    del spec["extraction"]["fields"]["order_id"]
    spec.update(name="order_triage", candidates=["demo:tiny-s"], metric="token_f1", threshold=0.2,
                dataset={s: f"data/{s}.jsonl" for s in ("train", "eval", "fresh")}, precisions=["int8"])
    spec["ladder"]["lora"]["steps"] = 300
    spec["finetune"]["epochs"] = 20  # 300 steps, as the screening run
    path = folder / "order_triage.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def run(demo_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("extraction")
    app = tmp / "app.yaml"
    app.write_text(f"name: triage\ntasks:\n  - {_triage_task(tmp)}\n")
    project = mlrun.load_project(str(ROOT), name="rightsizer", save=False)
    status = project.run("size_and_deploy", arguments={"app": str(app)}, artifact_path=str(tmp / "a"),
                         watch=True, dirty=True)
    assert str(status.state).lower() in ("completed", "succeeded"), status.state
    layout = RunLayout(tmp / "a")
    record = json.loads(layout.decision_file("order_triage").read_text())
    return project, layout, record


def test_the_record_shows_the_parsed_fields(run):
    _, _, rec = run
    chosen = rec["chosen"]
    # the model gets the format only with LoRA: zero-shot and few-shot answers are all malformed
    assert [r["rung"] for r in rec["ladder"]] == ["zero_shot", "few_shot", "lora"]
    assert chosen["rung"] == "lora" and chosen["quality"] >= rec["threshold"]
    ext = chosen["extraction"]
    assert set(ext["field_accuracy"]) == {"product", "issue"}
    assert 0.0 <= ext["malformed"] < 1.0 and ext["malformed_count"] == round(ext["malformed"] * 160)
    assert all("problems" in m for m in ext["malformed_examples"])
    assert "malformed answers" in rec["summary"]
    # the production adapter was trained and is what the record scores
    assert rec["lora"]["production"]["score"] >= rec["threshold"]
    assert [r["precision"] for r in rec["precision_search"] if r["status"] == "evaluated"][:1] == ["bf16"]


def test_the_served_answer_carries_the_parsed_fields_as_evaluated(run):
    project, layout, _ = run
    from functions.serving import set_task_models

    evaluation = json.loads(layout.evaluation_file("order_triage", "chosen").read_text())
    rows = [json.loads(line) for line in (layout.root.parent / "data" / "eval.jsonl").read_text().splitlines()]
    serving = project.get_function("serving").copy()
    set_task_models(serving, {"order_triage": str(layout.bundle_dir("order_triage"))})
    server = serving.to_mock_server()
    out = server.test("/v2/models/order_triage/infer", body={"inputs": [r["text"] for r in rows[:6]]})["outputs"]
    server.wait_for_completion()
    assert [o["generated"] for o in out] == evaluation["predictions"][:6]
    for o in out:
        assert set(o) >= {"fields", "valid", "problems"}
        if o["valid"]:
            assert set(o["fields"]) == {"product", "issue"} and o["problems"] == []
        else:
            assert o["problems"]
