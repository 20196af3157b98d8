"""Task types as a registry: one module per type (classification, extraction, generation).

``get(spec.type)`` is the only way the rest of the library branches on a task's type; adding
a type is one new module here plus its tests (docs/where-things-live.md has the checklist).
"""

from __future__ import annotations

from rightsizer.errors import ConfigError
from rightsizer.tasktypes.base import Engine, Predictions, TaskType
from rightsizer.tasktypes.classification import Classification
from rightsizer.tasktypes.extraction import Extraction
from rightsizer.tasktypes.generation import Generation

REGISTRY: dict[str, TaskType] = {t.name: t for t in (Classification(), Extraction(), Generation())}
TASK_TYPES: tuple[str, ...] = tuple(REGISTRY)


def get(name: str) -> TaskType:
    """The task type called ``name``; ConfigError naming the known ones otherwise."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"type: {name!r} is not a task type; expected one of {list(TASK_TYPES)}") from None


__all__ = ["REGISTRY", "TASK_TYPES", "Engine", "Predictions", "TaskType", "get",
           "Classification", "Extraction", "Generation"]
