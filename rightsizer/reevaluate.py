"""Re-evaluation: a deployed task model against fresh data, compared with its registration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rightsizer.bundle import read_bundle
from rightsizer.errors import ConfigError
from rightsizer.evaluate import evaluate_model
from rightsizer.taskspec import TaskSpec


def with_fresh_data(spec: TaskSpec, fresh: str) -> tuple[TaskSpec, str]:
    """The spec and split name to evaluate: ``fresh`` is a split of the spec or a data file."""
    if fresh in spec.dataset:
        return spec, fresh
    if Path(fresh).exists():
        return dataclasses.replace(spec, dataset={**spec.dataset, "fresh": str(fresh)}), "fresh"
    raise ConfigError(f"fresh_split: {fresh!r} is neither a split of the task "
                      f"({sorted(spec.dataset)}) nor an existing data file", spec.name)


def reevaluate_bundle(spec: TaskSpec, bundle_dir: str, fresh: str, progress: bool = True) -> dict:
    """Score the bundle on fresh data; flag a drop beyond ``spec.quality_tolerance``."""
    meta = read_bundle(bundle_dir)
    registered = meta.get("metrics", {}).get(spec.metric)
    if registered is None:
        raise ConfigError(f"{bundle_dir}: no registered {spec.metric} to compare with")
    spec2, split = with_fresh_data(spec, fresh)
    report = evaluate_model(spec2, bundle_dir, split=split, repeats=2, progress=progress)
    score = report["quality"]["score"]
    drop = registered - score
    regression = drop > spec.quality_tolerance
    action = (f"re-run size_and_deploy for task {spec.name} (fresh {spec.metric} {score:.3f} vs "
              f"registered {registered:.3f}, tolerance {spec.quality_tolerance})"
              if regression else "none")
    return {"task": spec.name, "metric": spec.metric, "registered_score": registered,
            "fresh_score": score, "drop": drop, "tolerance": spec.quality_tolerance,
            "regression": regression, "below_threshold": score < spec.threshold,
            "action": action, "fresh_examples": report["quality"]["n"],
            "latency": report["latency"]}
