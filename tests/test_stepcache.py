"""Reusing finished steps (rightsizer.stepcache): what a fingerprint sees, when an entry is
still valid, and that its files are written whole."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest

from rightsizer.atomic import atomic_write_text
from rightsizer.stepcache import (MARKER, StepCache, find_marker, fingerprint, link_dirs, path_digest,
                                  task_digest, unmark_dirs)
from rightsizer.taskspec import load_task

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def task_copy(tmp_path, demo_models):
    """ticket_routing's spec and data in a folder of their own (safe to change)."""
    shutil.copytree(ROOT / "tasks" / "data" / "ticket_routing", tmp_path / "data" / "ticket_routing")
    spec = tmp_path / "ticket_routing.yaml"
    shutil.copy(ROOT / "tasks" / "ticket_routing.yaml", spec)
    return spec


def test_a_fingerprint_follows_the_spec_its_data_and_the_parameters(task_copy):
    spec = load_task(task_copy)
    fp = fingerprint("select", {"task": spec, "latency_repeats": 3})
    assert fp == fingerprint("select", {"task": load_task(task_copy), "latency_repeats": 3})
    assert fp != fingerprint("select", {"task": spec, "latency_repeats": 4})
    assert fp != fingerprint("evaluate", {"task": spec, "latency_repeats": 3})
    assert fp != fingerprint("select", {"task": dataclasses.replace(spec, threshold=0.5), "latency_repeats": 3})
    # one changed row in a data file: another task digest
    eval_file = Path(spec.dataset_path("eval"))
    before = task_digest(spec)
    lines = eval_file.read_text().splitlines()
    row = json.loads(lines[0])
    row["text"] += " (edited)"
    eval_file.write_text("\n".join([json.dumps(row), *lines[1:]]) + "\n")
    assert task_digest(load_task(task_copy)) != before


def test_a_path_written_by_a_finished_step_counts_by_that_step(tmp_path):
    step = tmp_path / "run1" / "select"
    (step / "chosen").mkdir(parents=True)
    (step / "chosen" / "weights.bin").write_bytes(b"w" * 100)
    cache = StepCache(tmp_path / "cache")
    # before the step is marked finished, the folder counts by its bytes
    assert path_digest(step / "chosen").startswith("tree:")
    cache.record("select", "f" * 64, [step], {"model_dir": str(step / "chosen")}, run="run1")
    assert path_digest(step / "chosen") == f"step:{'f' * 64}:chosen"
    assert find_marker(step / "chosen" / "weights.bin")[1] == step.resolve()
    # a plain file outside any step: its bytes
    other = tmp_path / "x.json"
    other.write_text("{}")
    d = path_digest(other)
    other.write_text("{ }")
    assert path_digest(other) != d


def test_an_entry_is_reused_only_while_its_folders_are_complete(tmp_path):
    cache = StepCache(tmp_path / "cache")
    a, b = tmp_path / "run1" / "quantize", tmp_path / "run1" / "extra"
    a.mkdir(parents=True)
    (a / "bundle.txt").write_text("ok")
    fp = "a" * 64
    assert cache.lookup("quantize", fp) is None
    entry = cache.record("quantize", fp, [a, b], {"precision": "int8"}, run="run1")
    assert cache.lookup("quantize", fp) == entry and entry["results"] == {"precision": "int8"}
    assert cache.lookup("quantize", "b" * 64) is None  # another fingerprint
    # a step that runs again in the folder removes the marker first: no longer reusable
    unmark_dirs([b])
    assert not (b / MARKER).exists() and cache.lookup("quantize", fp) is None
    cache.record("quantize", fp, [a, b], {"precision": "int8"}, run="run1")
    shutil.rmtree(b)  # an earlier run's folder deleted by the user
    assert cache.lookup("quantize", fp) is None
    cache.record("quantize", fp, [a, b], {"precision": "int8"}, run="run1")
    # an unreadable or foreign entry is a miss, not an error
    cache.entry_file("quantize", fp).write_text("{truncated")
    assert cache.lookup("quantize", fp) is None
    cache.entry_file("quantize", fp).write_text(json.dumps({**entry, "version": 0}))
    assert cache.lookup("quantize", fp) is None
    # a marker of another step (the folder was rewritten by another run of it)
    cache.record("quantize", fp, [a, b], {"precision": "int8"}, run="run1")
    (a / MARKER).write_text(json.dumps({"fingerprint": "c" * 64}))
    assert cache.lookup("quantize", fp) is None


def test_a_reused_step_is_linked_into_the_new_run_and_a_rerun_unlinks_it(tmp_path):
    cache = StepCache(tmp_path / "cache")
    old = tmp_path / "run1" / "rightsizer" / "t" / "select"
    old.mkdir(parents=True)
    (old / "selection.json").write_text("{}")
    entry = cache.record("select", "d" * 64, [old], {}, run="run1")
    new = tmp_path / "run2" / "rightsizer" / "t" / "select"
    link_dirs(entry, [new])
    assert new.is_symlink() and not os.path.isabs(os.readlink(new))  # relative: the folder may move
    assert (new / "selection.json").read_text() == "{}"
    link_dirs(entry, [old])  # the same folder (a fixed artifact path): left as it is
    assert old.is_dir() and not old.is_symlink()
    # the step runs again in run2 (another input): the link goes, the earlier run is untouched
    unmark_dirs([new])
    assert not os.path.lexists(new) and (old / MARKER).is_file()


def test_atomic_write_text_leaves_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "decision.json"
    atomic_write_text(path, "old")

    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old"
    assert sorted(p.name for p in path.parent.iterdir()) == ["decision.json"]  # no temporary file
    atomic_write_text(path, "new")
    assert path.read_text() == "new"
