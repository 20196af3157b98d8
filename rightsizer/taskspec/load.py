"""Reading a task spec: the YAML file (``read_spec_yaml``), its types checked against the
spec's format (``rightsizer.schema``), then its values (``checks``); every problem in one
``ConfigError`` naming the file and field.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from rightsizer.errors import ConfigError
from rightsizer.prompting import PROMPT_FORMATS
from rightsizer.precisions import SEARCH_ORDER
from rightsizer.schema.check import build, json_schema
from rightsizer.schema.task import RUNGS, TaskSpec
from rightsizer.taskspec.checks import check_values
from rightsizer.tasktypes import TASK_TYPES
from rightsizer.yamlio import MAX_YAML_BYTES, read_yaml

MAX_SPEC_BYTES = MAX_YAML_BYTES  # a spec is a few KB; anything near this is not a spec


def task_from_dict(data: dict, source: str | None = None, base_dir: str = "",
                   check_source: bool = True) -> TaskSpec:
    """Build and validate a TaskSpec; raise ConfigError listing every problem.

    ``check_source``: whether the knowledge source (``retrieval.source``) must exist; a
    serving bundle's spec carries the built index instead (``rightsizer.bundle``)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping at the top level, got {type(data).__name__}", source)
    problems: list[str] = []
    data = copy.deepcopy(data)
    rungs_given = isinstance(data.get("ladder"), dict) and "rungs" in data["ladder"]
    spec = build(TaskSpec, data, "", problems)
    if problems:
        raise ConfigError(problems, source)
    spec.base_dir = base_dir
    if spec.retrieval is not None and not rungs_given:
        spec.ladder.rungs = list(RUNGS)  # the default ladder of a task with a knowledge source
    check_values(spec, problems, check_source)
    if problems:
        raise ConfigError(problems, source)
    return spec


def task_schema() -> dict[str, Any]:
    """The JSON Schema of a task spec file (``python -m rightsizer schema task``), with the
    names known above the format: task types, prompt formats, precisions."""
    return json_schema(TaskSpec, title="Rightsizer task spec", choices={
        "TaskSpec.type": TASK_TYPES, "TaskSpec.prompt_format": PROMPT_FORMATS,
        "TaskSpec.precisions": SEARCH_ORDER})


def read_spec_yaml(path: str | Path, what: str = "spec") -> dict:
    """A spec file's YAML mapping; a ConfigError naming the file for a missing, oversized,
    non-UTF-8 or invalid file, YAML aliases (``rightsizer.yamlio``; no spec needs them),
    or a top level that is not a mapping."""
    path = Path(path)
    data = read_yaml(path, what, max_bytes=MAX_SPEC_BYTES, max_aliases=0)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"the top level is a {type(data).__name__}; expected a mapping of fields", str(path))
    return data


def load_task(path: str | Path) -> TaskSpec:
    """Load and validate a task spec YAML file."""
    path = Path(path)
    data = read_spec_yaml(path, "task spec")
    return task_from_dict(data, source=str(path), base_dir=str(path.parent.resolve()))
