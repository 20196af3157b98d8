"""Write a directory in full or not at all: build it in a temporary sibling, then swap it in.

Every step that saves a model folder (bundles, adapters, merged and pre-quantized models,
the demo candidates) goes through :func:`atomic_dir`, so a reader never sees a half-written
folder and a failed write (an exception, Ctrl-C) leaves the previous folder as it was and
no temporary folder behind.
"""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def _unique_sibling(target: Path, kind: str) -> Path:
    """A name beside ``target`` that nothing uses yet (hidden, so listings skip it)."""
    while True:
        path = target.with_name(f".{target.name}.{kind}-{uuid.uuid4().hex[:12]}")
        if not os.path.lexists(path):
            return path


def _make_temp_dir(target: Path) -> Path:
    # os.mkdir (not tempfile.mkdtemp, which makes it 0700) so the folder gets the usual
    # umask permissions: other users (a serving container) may need to read it.
    while True:
        path = _unique_sibling(target, "tmp")
        try:
            os.mkdir(path)
            return path
        except FileExistsError:  # another writer took the name in between
            continue


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        try:
            os.unlink(path)
        except OSError:
            pass


def replace_dir(new: str | Path, target: str | Path) -> None:
    """Put folder ``new`` at ``target`` (same filesystem), replacing whatever is there.

    Two renames in the same folder (old one aside, new one in) leave ``target`` missing for
    an instant but never half written; if the second rename fails the old one is put back.
    """
    new, target = Path(new), Path(target)
    old = _unique_sibling(target, "old") if os.path.lexists(target) else None
    try:
        if old is not None:
            os.rename(target, old)
        os.rename(new, target)
    except BaseException:
        if old is not None and os.path.lexists(old) and not os.path.lexists(target):
            os.rename(old, target)
        raise
    if old is not None:
        _remove(old)  # a leftover here costs disk only; the new folder is in place


@contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces ``target``.

    On any failure inside the block (including ``KeyboardInterrupt``) the temporary folder
    is removed and an existing ``target`` is left untouched. The folder is a sibling of
    ``target`` so the final rename stays on one filesystem. Creates ``target``'s parent.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(target)
    try:
        yield tmp
        replace_dir(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` in full or not at all: a temporary sibling file,
    flushed to disk, then renamed over ``path``. A reader (or a rerun after a kill) sees the
    previous file or the new one, never a truncated one. Creates the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_sibling(path, "tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path
