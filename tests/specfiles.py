"""Test-only: write a task spec to a YAML file (``save_task``), so a test can check that
``TaskSpec.to_dict`` and loading are exact mirrors through a file, as a user's edit would
go. The library itself never writes a spec file (a bundle keeps ``to_dict`` as JSON)."""

from __future__ import annotations

from pathlib import Path

import yaml

from rightsizer.taskspec import TaskSpec


def save_task(spec: TaskSpec, path: str | Path) -> None:
    """Write a spec so that ``load_task`` gives it back unchanged."""
    Path(path).write_text(yaml.safe_dump(spec.to_dict(), sort_keys=True))
