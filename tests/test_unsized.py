"""rightsizer.unsized: what the workflow does with a task that cannot be sized (the library
side; tests/test_pipeline_unsized.py runs it through the pipeline)."""

from __future__ import annotations

import json

import pytest

from rightsizer.layout import RunLayout
from rightsizer.select import RungResult, Selection
from rightsizer.unsized import deploys, load_outcomes, missing_message, parse_flag, split_selections, unsized_entry


def _selection(task: str, passed: bool) -> Selection:
    r = RungResult(candidate="demo:tiny-s", params=100, rung="zero_shot", score=0.6, ci_low=0.5, ci_high=0.7,
                   value=0.6 if not passed else 0.95, threshold=0.9, passed=passed, n=80, seconds=1.0,
                   n_total=80, reason="" if passed else "demo:tiny-s (100 params) zero_shot: accuracy score 0.600 < threshold 0.9")
    return Selection(task=task, metric="accuracy", threshold=0.9, decision_rule="point",
                     order=[("demo:tiny-s", 100)], tried=[r], chosen=r if passed else None, rungs=["zero_shot"])


def _saved(tmp_path, *selections: Selection) -> tuple[RunLayout, list[str]]:
    layout = RunLayout(tmp_path)
    paths = []
    for sel in selections:
        sel.save(layout.selection_file(sel.task))  # atomic write: creates the folder
        paths.append(str(layout.selection_file(sel.task)))
    return layout, paths


def test_an_unsized_entry_carries_the_summary_and_what_would_be_needed():
    sel = _selection("routing", passed=False)
    entry = unsized_entry(sel)
    assert entry["summary"] == sel.summary() and entry["summary"].startswith("routing: NO candidate reaches")
    assert entry["needs"] == sel.needs() and entry["needs"][0].startswith("a lower bar: accuracy threshold 0.600")
    assert [r["rung"] for r in entry["ladder"]] == ["zero_shot"] and entry["order"] == [["demo:tiny-s", 100]]
    json.dumps(entry)  # goes into decisions.json as it is
    with pytest.raises(ValueError, match="passes its bar"):
        unsized_entry(_selection("routing", passed=True))


def test_sized_tasks_records_come_from_the_layout_and_a_missing_one_is_named(tmp_path):
    layout, paths = _saved(tmp_path, _selection("sentiment", False), _selection("routing", True))
    assert split_selections(paths) == (["routing"], [unsized_entry(_selection("sentiment", False))])
    with pytest.raises(FileNotFoundError, match=r"routing: sized by its select step, but its decision record .*"
                                                r"size_gpu/decision\.json is missing"):
        load_outcomes(paths, layout)
    layout.decision_file("routing").parent.mkdir(parents=True)
    layout.decision_file("routing").write_text(json.dumps({"task": "routing"}))
    records, unsized = load_outcomes(paths, layout)
    assert records == [{"task": "routing"}] and [u["task"] for u in unsized] == ["sentiment"]


def test_the_application_deploys_only_whole_unless_partial_and_never_empty():
    one = [unsized_entry(_selection("sentiment", False))]
    assert deploys(["routing"], [], partial=False) and deploys(["routing"], [], partial=True)
    assert not deploys(["routing"], one, partial=False) and deploys(["routing"], one, partial=True)
    assert not deploys([], one, partial=True)  # nothing to deploy


def test_the_missing_message_is_one_line_naming_the_task_what_is_needed_and_the_switch():
    one = [unsized_entry(_selection("sentiment", False))]
    assert missing_message(["routing"], [], deployed=True) == ""
    blocked = missing_message(["routing", "drafting"], one, deployed=False)
    assert "\n" not in blocked
    assert blocked.startswith("nothing deployed: the application needs all its tasks and 1 of its 3 cannot be "
                              "sized. sentiment: NO candidate reaches accuracy >= 0.9")
    assert "Would be needed: a lower bar" in blocked
    assert blocked.endswith("To deploy the other tasks (routing, drafting) without sentiment, set the workflow "
                            "argument or project param deploy_partial=true.")
    partial = missing_message(["routing"], one, deployed=True)
    assert partial.startswith("deployed without sentiment (deploy_partial is true): no candidate reaches its bar")
    none = missing_message([], one, deployed=False)
    assert none.startswith("nothing deployed: no task of the application can be sized (1 of 1).")
    assert "deploy_partial" not in none  # it would not help


def test_deploy_partial_takes_a_bool_or_true_false_text():
    assert [parse_flag(v, "deploy_partial") for v in (True, False, "true", "False", " TRUE ")] == [
        True, False, True, False, True]
    for bad in ("yes", "", None, 1):
        with pytest.raises(ValueError, match=r"deploy_partial: .*; expected true or false"):
            parse_flag(bad, "deploy_partial")
