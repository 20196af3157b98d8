"""Reuse a finished step on a rerun: a step's inputs are fingerprinted, and a step that
finished with the same fingerprint in an earlier run is not run again.

A rerun of ``size_and_deploy`` after a step was killed (or failed, or after a change to one
task) then redoes only what is new: every step whose inputs are unchanged links the
earlier run's complete folder into this run's layout and logs the same results, so no
model or artifact is registered twice.

What a fingerprint covers (``fingerprint``):

* the step's name and its parameters; a parameter that names a file or folder counts by
  its content: by the fingerprint of the step that wrote it (the marker file in that
  step's folder, so a model written by an earlier step is not read again) or else by a
  hash of its bytes;
* the task spec (``task_digest``): its settings, its data files, its knowledge source (and
  its embedding model) and the files of every local candidate model (a hub id counts by its name and revision; a
  file over 256 MiB, a weight shard, by its size and its first and last MiB);
* the code (``code_digest``): the ``rightsizer`` package, the step handlers (``functions/``)
  and the versions of the libraries that compute results; and the kind of device (latency
  is measured here).

How a step stays complete: the marker (``MARKER``) in each of its folders and the cache
entry are written last, each atomically, after every output is in place. A step killed at
any point leaves no marker, so it is never reused; its outputs are in its own run's folder
and are never read again. No MLRun import here (the handlers' side is
``functions.mlrun_io.reusable``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from rightsizer.atomic import atomic_write_text
from rightsizer.taskspec import TaskSpec

MARKER = ".rightsizer-step.json"  # in each folder a finished step wrote: {step, fingerprint, run}
ENTRY_VERSION = 1
# The libraries whose version changes what a step computes (scores, quantized weights).
RESULT_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "datasets", "bm25s", "numpy",
                    "safetensors", "torchao")
_CODE_DIRS = ("rightsizer", "functions")
_MARKER_DEPTH = 8  # how far up from a path a step's marker is looked for
LARGE_FILE_BYTES = 256 << 20  # above it, a file counts by its size and its first and last MiB


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@lru_cache(maxsize=4096)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if size > LARGE_FILE_BYTES:  # a weight shard: its size and its first and last MiB
            h.update(f"sampled:{size}:".encode() + f.read(1 << 20))
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read(1 << 20))
        else:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes; a file over ``LARGE_FILE_BYTES`` (a weight shard of a hub
    model) by its size and its first and last MiB, so that fingerprinting a step does not
    read gigabytes (every new pod would read them again). Remembered per path, size and
    modification time."""
    st = os.stat(path)
    return _file_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)


def tree_digest(path: str | Path) -> str:
    """A folder's content: its files' relative names and bytes (hidden names skipped:
    temporary folders and markers are not content)."""
    root = Path(path)
    parts = []
    for f in sorted(root.rglob("*")):
        rel = f.relative_to(root)
        if any(p.startswith(".") for p in rel.parts) or not f.is_file():
            continue
        parts.append(f"{rel.as_posix()}:{file_digest(f)}")
    return _sha("\n".join(parts).encode())


def find_marker(path: str | Path) -> tuple[dict, Path] | None:
    """The marker of the finished step whose folder holds ``path`` (the path itself or up to
    a few folders above it) and that folder; None when no finished step wrote it."""
    p = Path(path).resolve()
    for folder in [p, *p.parents][:_MARKER_DEPTH]:
        marker = folder / MARKER
        if marker.is_file():
            try:
                data = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                return None
            if isinstance(data, dict) and isinstance(data.get("fingerprint"), str):
                return data, folder
            return None
    return None


def path_digest(path: str | Path) -> str:
    """What a file or folder parameter contributes to a fingerprint: the writing step's
    fingerprint and the relative path when a finished step wrote it, its bytes otherwise."""
    found = find_marker(path)
    if found is not None:
        marker, folder = found
        rel = Path(path).resolve().relative_to(folder).as_posix()
        return f"step:{marker['fingerprint']}:{rel}"
    p = Path(path)
    return f"tree:{tree_digest(p)}" if p.is_dir() else f"file:{file_digest(p)}"


def value_digest(value: Any) -> Any:
    """A JSON-able stand-in for a parameter: paths that exist count by content."""
    if isinstance(value, dict):
        return {str(k): value_digest(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [value_digest(v) for v in value]
    if isinstance(value, Path) or (isinstance(value, str) and value and len(value) < 4096
                                   and "://" not in value and os.path.exists(value)):
        return path_digest(value)
    if isinstance(value, TaskSpec):
        return task_digest(value)
    return value


def task_digest(spec: TaskSpec) -> str:
    """A task spec's fingerprint: its settings, the local files its splits and knowledge
    source name, and its candidates (a local model folder by its files)."""
    from rightsizer.models import resolve_model_ref

    def local_or_ref(ref) -> str:  # a local file or folder by its content, a hub id as it is
        return path_digest(ref) if os.path.exists(ref) else str(ref)

    parts: dict[str, Any] = {"spec": spec.to_dict()}
    parts["data"] = {split: local_or_ref(spec.dataset_path(split)) for split in sorted(spec.dataset)}
    if spec.retrieval is not None:
        parts["knowledge"] = local_or_ref(spec.source_path())
        if spec.retrieval.model:  # the embedding retriever's model
            parts["encoder"] = local_or_ref(resolve_model_ref(spec.retrieval.model))
    parts["candidates"] = {ref: local_or_ref(resolve_model_ref(ref)) for ref in spec.candidates}
    return _sha(json.dumps(parts, sort_keys=True, default=str).encode())


@lru_cache(maxsize=1)
def code_digest() -> str:
    """The code that computes a step's results: this package and the step handlers (every
    file but caches), the result-relevant library versions and the kind of device."""
    repo = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for name in _CODE_DIRS:
        folder = repo / name
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc",):
                h.update(f.relative_to(repo).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    versions = {}
    for lib in RESULT_LIBRARIES:
        try:
            versions[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            versions[lib] = None
    h.update(json.dumps({"libraries": versions, "device": _device_kind()}, sort_keys=True).encode())
    return h.hexdigest()


def _device_kind() -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return "cuda:" + ",".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    except ImportError:
        pass
    return f"cpu:{platform.machine()}"


def fingerprint(step: str, inputs: dict[str, Any]) -> str:
    """The fingerprint of running ``step`` on ``inputs`` with this code."""
    body = {"step": step, "inputs": value_digest(inputs), "code": code_digest()}
    return _sha(json.dumps(body, sort_keys=True, default=str).encode())


@dataclass(frozen=True)
class StepCache:
    """Finished steps by fingerprint, under ``root`` (beside the runs' folders)::

        <root>/steps/<step>/<fingerprint>.json    the entry: the run, its folders, its results
    """

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    def entry_file(self, step: str, fp: str) -> Path:
        return self.root / "steps" / step / f"{fp}.json"

    def lookup(self, step: str, fp: str) -> dict | None:
        """The entry of a finished step with this fingerprint whose folders are all still
        there and still carry its marker; None otherwise (a missing, unreadable or stale
        entry is a miss: the step runs again and its entry replaces this one)."""
        path = self.entry_file(step, fp)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or entry.get("version") != ENTRY_VERSION \
                or entry.get("fingerprint") != fp or not isinstance(entry.get("dirs"), list) \
                or not isinstance(entry.get("results"), dict):
            return None
        for folder in entry["dirs"]:
            found = find_marker(folder)
            if found is None or found[0].get("fingerprint") != fp or found[1] != Path(folder).resolve():
                return None
        return entry

    def record(self, step: str, fp: str, dirs: list[Path], results: dict, run: str) -> dict:
        """Mark ``dirs`` as the complete output of this step and record the entry (markers
        first, the entry last: an entry always points at marked folders)."""
        marker = {"step": step, "fingerprint": fp, "run": run,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        resolved = []
        for folder in dirs:
            folder = Path(folder)
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / MARKER, json.dumps(marker, indent=2))
            resolved.append(str(folder.resolve()))
        entry = {"version": ENTRY_VERSION, **marker, "dirs": resolved, "results": results}
        atomic_write_text(self.entry_file(step, fp), json.dumps(entry, indent=2, sort_keys=True, default=str))
        return entry

    def finetune_jobs_dir(self, task: str) -> Path:
        """Where a task's production fine-tuning jobs live across runs (one folder per job
        id: a rerun after a kill resumes from the last checkpoint)."""
        return self.root / "finetune" / task


def link_dirs(entry: dict, dirs: list[Path]) -> None:
    """Put the entry's folders in this run's layout at ``dirs`` (relative symlinks, so the
    artifacts folder may move as a whole); a folder already there is replaced."""
    import shutil

    for src, dest in zip(entry["dirs"], dirs):
        dest = Path(dest)
        src = Path(src)
        if dest.resolve() == src:
            continue
        if dest.is_symlink() or dest.is_file():
            dest.unlink()
        elif dest.is_dir():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(src, dest.parent.resolve()), dest, target_is_directory=True)


def unmark_dirs(dirs: list[Path]) -> None:
    """Before a step runs in ``dirs``: a folder linked from another run is unlinked (the
    step must not write into that run), and a folder's marker is removed, so a step killed
    while it rewrites a folder is not taken for the finished one."""
    for folder in map(Path, dirs):
        if folder.is_symlink():
            folder.unlink()
        elif (folder / MARKER).is_file():
            (folder / MARKER).unlink()
