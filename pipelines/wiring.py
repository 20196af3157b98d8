"""Helpers the workflows share: run a step and read its outputs on either engine."""

from __future__ import annotations

import mlrun


def run_step(project, function: str, **kwargs):
    """``project.run_function`` that fails fast on the local engine.

    Without an MLRun API, a local step that raises comes back as a run still in state
    'created' (the NopDB never records the error), and the local engine then waits for it
    forever. Mark it as an error and stop the workflow with the step's name instead.
    """
    step = project.run_function(function, **kwargs)
    if isinstance(step, mlrun.model.RunObject) and step.status.state != "completed":
        step.status.state = "error"
        raise RuntimeError(f"step {kwargs.get('name', function)!r} failed: see its error logged above")
    return step


def output(step, key: str):
    """A step's result: a KFP placeholder on a cluster, the value itself on the local engine.

    On the local engine without an MLRun API, ``RunObject.outputs`` tries to fetch the
    step's artifacts from the (absent) DB and fails, so the results are read directly.
    """
    if isinstance(step, mlrun.model.RunObject):
        return step.status.results[key]
    return step.outputs[key]
