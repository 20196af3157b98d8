"""Extraction with named fields: the answer is parsed and each field validated; a malformed
answer scores 0 and is counted; the spec's extraction: section is checked at load."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from rightsizer.errors import ConfigError
from rightsizer.evaluate import load_rows, score_predictions
from rightsizer.tasktypes import Predictions
from rightsizer.tasktypes.extraction import parse_answer
from rightsizer.taskspec import load_task, task_from_dict

TASKS = Path(__file__).resolve().parents[1] / "tasks"


@pytest.fixture(scope="module")
def spec():
    return load_task(TASKS / "order_extraction.yaml")


def _raw() -> dict:
    raw = yaml.safe_load((TASKS / "order_extraction.yaml").read_text())
    raw["dataset"] = {k: str(TASKS / v) for k, v in raw["dataset"].items()}
    return raw


def test_well_formed_answers_parse_in_any_order(spec):
    p = parse_answer(spec.extraction, "issue: late; product: Laptop ; order_id: #48213")
    assert p.valid and p.fields == {"order_id": "#48213", "product": "Laptop", "issue": "late"}
    # json format
    rules = task_from_dict({**_raw(), "extraction": {**_raw()["extraction"], "format": "json"}}).extraction
    assert parse_answer(rules, '{"order_id": "#48213", "product": "phone", "issue": "damaged"}').valid
    assert parse_answer(rules, "order_id: #48213; product: phone; issue: damaged").problems[0].startswith("not JSON")


@pytest.mark.parametrize("answer, problem", [
    ("order_id: #48213; product: laptop", "field 'issue' is missing"),
    ("order_id: 4821-; product: laptop; issue: late", "does not match"),
    ("order_id: #48213; product: laptop; issue: broken", "'broken' is not one of"),
    ("order_id: #48213; product: laptop; issue: late; colour: red", "unknown field 'colour'"),
    ("the laptop from #48213 is late", "is not 'name: value'"),
    ("", "field 'order_id' is missing"),
])
def test_malformed_answers_are_named(spec, answer, problem):
    p = parse_answer(spec.extraction, answer)
    assert not p.valid
    assert any(problem in x for x in p.problems), p.problems


def test_scoring_well_formed_partial_and_malformed(spec):
    gold = "order_id: #48213; product: laptop; issue: late"
    rows = [{"text": "x", "answer": gold}] * 4
    answers = ["product: laptop; issue: late; order_id: #48213",   # right, other order
               "order_id: #48213; product: phone; issue: late",     # one field wrong
               "order_id: #48213; product: laptop",                 # malformed: a field missing
               "order_id: #48213, product: laptop, issue: late"]    # malformed: not the format
    q = score_predictions(spec, rows, Predictions(answers, None, 0.1))
    assert q.metrics["exact_match"] == pytest.approx(0.25)
    # token F1: full credit, 2 of 3 values, and 0 for both malformed answers
    assert q.metrics["token_f1"] == pytest.approx((1 + 2 / 3) / 4, abs=0.02)
    ex = q.extraction
    assert ex["malformed"] == 0.5 and ex["malformed_count"] == 2
    assert ex["field_accuracy"] == {"order_id": 0.5, "product": 0.25, "issue": 0.5}
    assert [m["row"] for m in ex["malformed_examples"]] == [2, 3]
    assert "malformed" in q.to_dict()["extraction"]
    # without fields, exact match compares the normalised text: the reordered answer is
    # wrong and the one with commas (punctuation is dropped) right
    plain = task_from_dict({k: v for k, v in _raw().items() if k != "extraction"})
    plain_q = score_predictions(plain, rows, Predictions(answers, None, 0.1))
    assert plain_q.metrics["exact_match"] == 0.25 and plain_q.extraction == {}
    assert score_predictions(plain, rows[3:], Predictions(answers[3:], None, 0.1)).score == 1.0


def test_demo_data_gold_answers_are_valid(spec):
    rows = load_rows(spec, "eval")
    assert len(rows) == 160 and all(parse_answer(spec.extraction, r["answer"]).valid for r in rows)


def test_a_gold_answer_that_breaks_the_rules_is_refused(tmp_path, spec):
    bad = tmp_path / "eval.jsonl"
    bad.write_text('{"text": "m", "answer": "order_id: #48213; product: laptop; issue: late"}\n'
                   '{"text": "m", "answer": "order_id: 1234; product: laptop; issue: late"}\n')
    raw = _raw()
    raw["dataset"]["eval"] = str(bad)
    with pytest.raises(ConfigError, match=r"row 1: answer 'order_id: 1234.*does not match"):
        load_rows(task_from_dict(raw), "eval")


@pytest.mark.parametrize("extraction, message", [
    ({"fields": {}}, "extraction.fields: expected a mapping of field name"),
    ({"fields": {"order_id": {"pattern": "[A-Z"}}}, "extraction.fields.order_id.pattern: '[A-Z' is not a regular expression"),
    ({"fields": {"a": {"pattern": "x", "values": ["x"]}}}, "extraction.fields.a: give a pattern or values, not both"),
    ({"fields": {"a": {"values": []}}}, "extraction.fields.a.values: empty"),
    ({"fields": {"a": {"colour": 1}}}, "extraction.fields.a.colour: unknown field"),
    ({"fields": {"a b": {}}}, "'a b' is not a field name"),
    ({"fields": {"a": "x"}}, "extraction.fields.a: expected a mapping"),
    ({"fields": {"a": {}}, "format": "xml"}, "extraction.format: 'xml'; expected one of"),
])
def test_bad_extraction_sections_are_named(extraction, message):
    raw = {**_raw(), "extraction": extraction}
    with pytest.raises(ConfigError) as exc:
        task_from_dict(raw)
    assert message in str(exc.value)


def test_only_an_extraction_task_names_fields():
    raw = yaml.safe_load((TASKS / "ticket_routing.yaml").read_text())
    raw["extraction"] = _raw()["extraction"]
    with pytest.raises(ConfigError, match="extraction: only an extraction task names answer fields"):
        task_from_dict(raw)


def test_the_section_survives_save_and_load(tmp_path, spec):
    """A bundle carries its spec through save_task / task_from_dict: the fields must survive."""
    from tests.specfiles import save_task

    save_task(spec, tmp_path / "s.yaml")
    again = load_task(tmp_path / "s.yaml")
    assert again.extraction == spec.extraction and again.to_dict() == spec.to_dict()


def test_served_answers_carry_the_parsed_fields(spec):
    """Serving answers through the task type's respond: the generated text, its fields,
    whether it is valid and what is wrong with it."""
    from rightsizer import tasktypes

    texts = ["order_id: #48213; product: laptop; issue: late", "order_id: #48213; product: laptop"]
    out = tasktypes.get("extraction").respond(None, spec, ["p1", "p2"], Predictions(texts, None, 0.0))
    assert out[0] == {"task": "order_extraction", "generated": texts[0], "valid": True, "problems": [],
                      "fields": {"order_id": "#48213", "product": "laptop", "issue": "late"}}
    assert out[1]["valid"] is False and out[1]["problems"] == ["field 'issue' is missing"]
