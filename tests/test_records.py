"""Typed, versioned records: the decision record (rightsizer.records) and the fleet plan's JSON
read back through one reader each; what the builders write is what the readers give back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_fleet import TINY_L, TINY_M, TINY_S, _record, decision, three_tiny

from rightsizer.errors import ConfigError
from rightsizer.layout import RunLayout
from rightsizer.plan import FleetPlan, load_decisions, plan_fleet
from rightsizer.plan.app import decisions_from_app
from rightsizer.records import DECISION_SCHEMA_VERSION, PLAN_SCHEMA_VERSION, DecisionRecord, Side, as_record
from rightsizer.size_gpu import save_record

APP = Path(__file__).resolve().parents[1] / "tasks" / "examples" / "support_hub.yaml"


def test_a_size_gpu_record_reads_back_as_written(sentiment_spec):
    record = _record(sentiment_spec, TINY_S, TINY_L, rung="retrieval", retrieval={"k": 2, "recall_at_k": 0.9},
                     extraction={"malformed": 0.05})
    assert record["schema_version"] == DECISION_SCHEMA_VERSION
    typed = DecisionRecord.from_dict(json.loads(json.dumps(record)))
    assert typed.to_dict() == record
    assert typed.chosen.model == "tiny-s" and typed.chosen.retrieval_recall_at_k == 0.9
    assert typed.workload.batch == sentiment_spec.workload.batch and typed.slo.tpot_ms == sentiment_spec.slo.tpot_ms
    assert typed.baseline.config["hidden_size"] == 256 and typed.lora is None


def test_an_app_record_keeps_its_own_fields():
    records = decisions_from_app(APP)
    for r in records:
        typed = DecisionRecord.from_dict(r)
        assert typed.to_dict() == r and typed.chosen.quality is None and typed.chosen.gpu is None
        assert "gpu" not in r["chosen"] and "ladder" not in r  # an app record has no sizing evidence


def test_a_record_without_schema_version_is_version_1_and_a_newer_one_is_refused(tmp_path):
    old = decision("a", TINY_S)  # written before records carried a version
    assert as_record(old).to_dict() == {**old, "schema_version": DECISION_SCHEMA_VERSION}
    path = tmp_path / "a.json"
    path.write_text(json.dumps({**old, "schema_version": DECISION_SCHEMA_VERSION + 1}))
    with pytest.raises(ConfigError, match=r"a\.json: decision of task 'a': schema_version 2 is newer"):
        load_decisions(path)


def test_a_record_missing_a_required_field_names_the_file_the_task_and_the_field(tmp_path):
    layout = RunLayout(tmp_path)
    path = layout.decision_file("a")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"task": "a", "chosen": {"model": "m"}, "baseline": 3}))
    with pytest.raises(ConfigError) as exc:
        load_decisions(tmp_path)
    assert str(path) in str(exc.value) and "decision of task 'a'.baseline: expected a mapping" in str(exc.value)
    with pytest.raises(ConfigError, match=r"decision of task 'b': missing required field 'chosen'"):
        plan_fleet([decision("a", TINY_S), {"task": "b"}])
    with pytest.raises(ConfigError, match=r"decision of task 'a': missing or bad field 'workload.batch'"):
        plan_fleet([{**decision("a", TINY_S), "workload": {"prompt_tokens": 8, "output_tokens": 4}}])


def test_the_report_file_carries_a_version_the_plan_checks(tmp_path):
    path = tmp_path / "decisions.json"
    save_record({"schema_version": 1, "records": three_tiny()}, path)
    assert [r.task for r in load_decisions(path)] == ["a", "b", "c"]
    save_record({"schema_version": 9, "records": three_tiny()}, path)
    with pytest.raises(ConfigError, match="decisions: schema_version 9 is newer"):
        load_decisions(path)


def test_plan_fleet_reads_typed_records_and_their_json_alike():
    records = [decision("a", TINY_S), decision("b", TINY_M)]
    typed = plan_fleet([as_record(r) for r in records], include_cpu=False)
    assert typed.to_dict() == plan_fleet(records, include_cpu=False).to_dict()
    side = Side(model="m", params=1, precision="bf16")
    assert side.to_dict() == {"model": "m", "params": 1, "precision": "bf16"}  # only what was given
    assert side.replace(precision="int8").to_dict() == {"model": "m", "params": 1, "precision": "int8"}


def test_the_fleet_plan_reads_back_from_its_json():
    plan = plan_fleet(three_tiny(), include_cpu=False)
    body = {**plan.to_dict(), "function_specs": plan.function_specs(), "unsized_tasks": []}
    assert body["schema_version"] == PLAN_SCHEMA_VERSION
    back = FleetPlan.from_dict(json.loads(json.dumps(body)), source="fleet_plan.json")
    assert back.to_dict() == plan.to_dict() and back.function_specs() == plan.function_specs()
    assert back.baseline is not None and back.baseline.to_dict() == plan.baseline.to_dict()
    with pytest.raises(ConfigError, match=r"fleet_plan\.json: fleet plan: schema_version 2 is newer"):
        FleetPlan.from_dict({**body, "schema_version": 2}, source="fleet_plan.json")
    del body["groups"][0]["models"][0]["batch"]
    with pytest.raises(ConfigError, match=r"missing or bad field 'plan\.groups\[0\]\.models\[0\]\.batch'"):
        FleetPlan.from_dict(body)
