"""Checkpoints: which one to resume from, and whether resuming it can work.

A checkpoint folder (``checkpoint-<step>``, written by the HF Trainer) counts only when
our marker file ``rightsizer-checkpoint.json`` is in it: the marker is written after every
rank finished saving, so a run killed while saving leaves an unmarked folder that is
skipped. The marker records the world size, the ZeRO stage and a fingerprint of the base
model, so that a resume that cannot work fails before training with a clear message.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rightsizer.errors import ConfigError

MARKER = "rightsizer-checkpoint.json"
_CKPT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(ckpt_dir: str | Path) -> list[tuple[int, Path, dict | None]]:
    """``(step, path, marker or None)`` for every ``checkpoint-<step>`` folder, by step."""
    out = []
    d = Path(ckpt_dir)
    if not d.is_dir():
        return out
    for p in d.iterdir():
        m = _CKPT.match(p.name)
        if m and p.is_dir():
            marker = p / MARKER
            meta = None
            if marker.is_file():
                try:
                    meta = json.loads(marker.read_text())
                except ValueError:
                    meta = None
            out.append((int(m.group(1)), p, meta))
    return sorted(out, key=lambda t: t[0])


def latest_checkpoint(ckpt_dir: str | Path) -> tuple[Path, dict] | None:
    """The newest complete (marked) checkpoint, or None."""
    done = [(p, meta) for _, p, meta in list_checkpoints(ckpt_dir) if meta is not None]
    return done[-1] if done else None


def write_marker(ckpt: str | Path, meta: dict) -> None:
    p = Path(ckpt)
    tmp = p / (MARKER + ".tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True))
    tmp.replace(p / MARKER)


def resume_problems(meta: dict, ckpt: Path, *, world_size: int, zero_stage: int | None,
                    fingerprint: str, model: str) -> list[str]:
    """Why resuming ``ckpt`` (with marker ``meta``) in this run cannot work; empty when it can."""
    problems = []
    if meta.get("base_fingerprint") != fingerprint:
        problems.append(
            f"checkpoint {ckpt} was written for base model {meta.get('model')!r} (fingerprint "
            f"{meta.get('base_fingerprint')}), but this run's base is {model!r} (fingerprint "
            f"{fingerprint}). Use another output_dir, set resume=False to start over, or "
            "point model at the checkpoint's base.")
    if meta.get("world_size") != world_size:
        was = meta.get("world_size")
        problems.append(
            f"checkpoint {ckpt} was written by {was} process(es) but this run has "
            f"{world_size}. DeepSpeed's ZeRO checkpoints are partitioned per rank and cannot be "
            f"loaded by a different number of processes (and the data order would change). "
            f"Either rerun with {was} processes (torchrun --nproc_per_node {was}, nproc={was}), "
            f"or convert the checkpoint: `python {ckpt}/zero_to_fp32.py {ckpt} <out>` for the "
            "weights, or DeepSpeed's ds_to_universal.py for a universal checkpoint that any "
            "world size can load (set \"checkpoint\": {\"load_universal\": true}); then start a "
            "new run from it.")
    if zero_stage is not None and meta.get("zero_stage") != zero_stage:
        problems.append(
            f"checkpoint {ckpt} was written with ZeRO stage {meta.get('zero_stage')} but this run "
            f"uses stage {zero_stage}; resume with the same stage or start over (resume=False).")
    return problems


def check_resume(ckpt_dir: str | Path, *, world_size: int, zero_stage: int | None, fingerprint: str,
                 model: str) -> Path | None:
    """The checkpoint to resume from (None: start fresh); raises ConfigError when it cannot work."""
    found = latest_checkpoint(ckpt_dir)
    if found is None:
        return None
    ckpt, meta = found
    problems = resume_problems(meta, ckpt, world_size=world_size, zero_stage=zero_stage,
                               fingerprint=fingerprint, model=model)
    if problems:
        raise ConfigError(problems, source="resume")
    return ckpt
