"""Reading an application spec: its task specs, each validated (``load_app``), and their
paths for the pipeline (``app_task_paths``)."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rightsizer.errors import ConfigError
from rightsizer.schema.app import AppFile
from rightsizer.schema.check import json_schema
from rightsizer.schema.task import TaskSpec
from rightsizer.taskspec.load import load_task, read_spec_yaml


@dataclass
class AppSpec:
    """A gen-AI application: its name and the task specs it is split into."""

    name: str
    tasks: list[TaskSpec]


APP_FIELDS = tuple(f.name for f in dataclasses.fields(AppFile))  # baseline: checked by ``plan --app``


def load_app(path: str | Path) -> AppSpec:
    """Load an application spec (``name`` and ``tasks``: spec paths relative to it)."""
    path = Path(path)
    data = read_spec_yaml(path, "application spec")
    # The messages say what an app spec needs more plainly than the generic type check would;
    # the baseline section's fields are checked where they are used (rightsizer.plan.app).
    problems = [f"{key}: unknown field; expected some of {list(APP_FIELDS)}" for key in data
                if key not in APP_FIELDS]
    if not isinstance(data.get("name"), str):
        problems.append("name: missing or not a string")
    if not isinstance(data.get("tasks"), list) or not data.get("tasks"):
        problems.append("tasks: expected a non-empty list of task spec paths")
    else:
        problems += [f"tasks[{i}]: {ref!r}; expected a task spec path (relative to the app spec)"
                     for i, ref in enumerate(data["tasks"]) if not isinstance(ref, str) or not ref.strip()]
    if problems:
        raise ConfigError(problems, str(path))
    tasks, errors = [], []
    for ref in data["tasks"]:
        try:
            tasks.append(load_task(path.parent / ref))
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError(errors, str(path))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"tasks: duplicate task names {names}", str(path))
    return AppSpec(name=data["name"], tasks=tasks)


def app_task_paths(app_path: str | Path, root: str | Path = ".") -> list[tuple[str, str]]:
    """``(task name, spec path)`` for each task of an app spec, validating every spec."""
    path = Path(app_path)
    if not path.is_absolute():
        path = Path(root) / path
    app = load_app(path)
    refs = read_spec_yaml(path, "application spec")["tasks"]
    root = Path(root).resolve()
    # Relative to the project root, so the same paths work in a cluster pod's source dir.
    return [(t.name, os.path.relpath((path.parent / ref).resolve(), root))
            for t, ref in zip(app.tasks, refs)]


def app_schema() -> dict[str, Any]:
    """The JSON Schema of an application spec file (``python -m rightsizer schema app``)."""
    return json_schema(AppFile, title="Rightsizer application spec")
