"""atomic_dir: a folder is replaced in full or not at all, and no temporary folder is left."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from rightsizer import atomic
from rightsizer.atomic import atomic_dir
from rightsizer.bundle import BUNDLE_FILE, read_bundle, write_bundle


def _folder(path: Path, files: dict[str, str]) -> Path:
    path.mkdir(parents=True)
    for name, text in files.items():
        (path / name).write_text(text)
    return path


def _contents(path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted(path.iterdir())}


def _failing_copy(after: int):
    """A copytree copy_function that copies ``after`` files, then fails (a full disk, say)."""
    copied = []

    def copy(src, dst, **kw):
        if len(copied) == after:
            raise OSError(28, "No space left on device")
        copied.append(src)
        return shutil.copy2(src, dst, **kw)
    return copy


def test_success_replaces_the_target(tmp_path):
    target = _folder(tmp_path / "out", {"old.txt": "old"})
    with atomic_dir(target) as tmp:
        assert tmp.parent == tmp_path and tmp.is_dir() and not any(tmp.iterdir())
        assert _contents(target) == {"old.txt": "old"}  # untouched until the block ends
        (tmp / "new.txt").write_text("new")
    assert _contents(target) == {"new.txt": "new"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary or old folder left


def test_success_creates_a_missing_target_and_its_parent(tmp_path):
    target = tmp_path / "a" / "b" / "out"
    with atomic_dir(target) as tmp:
        (tmp / "f").write_text("x")
    assert _contents(target) == {"f": "x"}
    assert [p.name for p in target.parent.iterdir()] == ["out"]


def test_the_temporary_folder_has_the_usual_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        with atomic_dir(tmp_path / "out"):
            pass
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755  # readable by a serving container


def test_two_writers_get_different_temporary_folders(tmp_path):
    with atomic_dir(tmp_path / "out") as a, atomic_dir(tmp_path / "out") as b:
        assert a != b


def test_a_copy_failing_half_way_leaves_the_previous_target_and_no_temp(tmp_path):
    src = _folder(tmp_path / "src", {f"{i}.bin": str(i) for i in range(4)})
    target = _folder(tmp_path / "out", {"old.txt": "old"})
    with pytest.raises(OSError, match="No space"):
        with atomic_dir(target) as tmp:
            shutil.copytree(src, tmp, dirs_exist_ok=True, copy_function=_failing_copy(after=1))
    assert _contents(target) == {"old.txt": "old"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "src"]


@pytest.mark.parametrize("exc", [KeyboardInterrupt, SystemExit, ValueError])
def test_any_interruption_cleans_up(tmp_path, exc):
    target = _folder(tmp_path / "out", {"old.txt": "old"})
    with pytest.raises(exc):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise exc()
    assert _contents(target) == {"old.txt": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_a_failed_swap_puts_the_old_target_back(tmp_path, monkeypatch):
    target = _folder(tmp_path / "out", {"old.txt": "old"})
    real_rename = os.rename
    calls = []

    def rename(src, dst):
        calls.append((src, dst))
        if len(calls) == 2:  # the old folder is aside; moving the new one in fails
            raise OSError("rename failed")
        return real_rename(src, dst)

    monkeypatch.setattr(atomic.os, "rename", rename)
    with pytest.raises(OSError, match="rename failed"):
        with atomic_dir(target) as tmp:
            (tmp / "new.txt").write_text("new")
    assert _contents(target) == {"old.txt": "old"}
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_write_bundle_failing_half_way_keeps_the_previous_bundle(tmp_path, monkeypatch, routing_spec):
    model = _folder(tmp_path / "model", {"config.json": "{}", "model.safetensors": "w",
                                         "tokenizer.json": "{}"})
    out = tmp_path / "quantize" / "bundle"
    write_bundle(model, routing_spec, out, base_model="demo:tiny-s", rung="zero_shot")
    before = _contents(out)
    assert json.loads(before[BUNDLE_FILE])["rung"] == "zero_shot"

    real_copytree = shutil.copytree
    monkeypatch.setattr(shutil, "copytree",
                        lambda src, dst, **kw: real_copytree(src, dst, **kw,
                                                             copy_function=_failing_copy(after=1)))
    with pytest.raises(OSError, match="No space"):
        write_bundle(model, routing_spec, out, base_model="demo:tiny-m", rung="lora")
    assert _contents(out) == before and read_bundle(out)["rung"] == "zero_shot"
    assert [p.name for p in out.parent.iterdir()] == ["bundle"]  # no bundle.tmp-* / .bundle.tmp-*

    monkeypatch.undo()
    write_bundle(model, routing_spec, out, base_model="demo:tiny-m", rung="lora")
    assert read_bundle(out)["rung"] == "lora" and (out / "model.safetensors").read_text() == "w"
    assert [p.name for p in out.parent.iterdir()] == ["bundle"]
