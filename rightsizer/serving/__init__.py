"""Serving core: one engine per task model, the request protocol, no web framework or MLRun.

``engine.TaskEngine`` answers a task's requests through the inference core, batching across
concurrent callers (continuous batching for generation, micro-batches for label scoring);
``contract`` holds its settings, limits and answer record; ``api`` parses V2 and
OpenAI-shaped requests and shapes their responses; ``errors`` holds the error type with its
HTTP status (a ``rightsizer.routing.RouteError``: the routes and the error shapes live there).
The MLRun graph around them is ``functions/serving.py``.

Importing this package loads no torch: ``TaskEngine`` is imported from the engine module the
first time it is asked for, so the request parser and the router stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rightsizer.serving.contract import Answer, EngineConfig, validate_texts
from rightsizer.serving.errors import ServingError

if TYPE_CHECKING:
    from rightsizer.serving.engine import TaskEngine

__all__ = ["Answer", "EngineConfig", "ServingError", "TaskEngine", "validate_texts"]


def __getattr__(name: str) -> Any:
    if name == "TaskEngine":  # the torch engine, loaded when first used
        from rightsizer.serving.engine import TaskEngine

        return TaskEngine
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
