"""The serving bundle: a saved model plus ``rightsizer.json``, everything serving needs.

``rightsizer.json`` holds the task's prompt template, label options, few-shot examples,
the quantization config to re-apply at load time, and where the model came from. The
bundle is what gets registered as the task's model artifact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rightsizer.atomic import atomic_dir
from rightsizer.errors import ConfigError
from rightsizer.taskspec import TaskSpec

BUNDLE_FILE = "rightsizer.json"


def write_bundle(model_dir: str | Path, spec: TaskSpec, out_dir: str | Path, *,
                 base_model: str, rung: str, shots: list[dict] | None = None,
                 quant_config: dict | None = None, metrics: dict | None = None) -> Path:
    """Copy the model folder to ``out_dir`` and add the serving config (atomic)."""
    out = Path(out_dir)
    meta = {
        "task": spec.name, "type": spec.type, "prompt": spec.prompt,
        "input_field": spec.input_field, "label_field": spec.label_field,
        "labels": spec.labels, "shots": shots or [], "base_model": base_model, "rung": rung,
        "quant_config": quant_config or {"precision": "fp32", "backend": "none"},
        "max_new_tokens": spec.workload.output_tokens, "metrics": metrics or {},
        "trust_remote_code": spec.trust_remote_code,
    }
    with atomic_dir(out) as tmp:
        shutil.copytree(model_dir, tmp, ignore=shutil.ignore_patterns(BUNDLE_FILE),
                        dirs_exist_ok=True)
        (tmp / BUNDLE_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
    return out


def read_bundle(bundle_dir: str | Path) -> dict:
    path = Path(bundle_dir) / BUNDLE_FILE
    if not path.is_file():
        raise ConfigError(f"{bundle_dir}: not a Rightsizer serving bundle (no {BUNDLE_FILE})")
    return json.loads(path.read_text())
