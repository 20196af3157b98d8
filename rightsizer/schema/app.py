"""The application spec's format: a name, the task spec files, the optional one-big-model
baseline (``python -m rightsizer plan --app``). Loaded by ``rightsizer.taskspec.load_app``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Baseline:
    """The one big model every task would otherwise run (bf16), for the plan's comparison."""

    model: str  # a config.json path (relative to the app spec) or a hub id
    name: str = ""  # how the plan names it (default: the config's _name_or_path)


@dataclass
class AppFile:
    """A gen-AI application: its name and the task specs it is split into (paths relative to
    the app spec)."""

    name: str
    tasks: list[str]
    baseline: Baseline | None = None
