"""One helper the workflows share: read a step's output on either engine."""

from __future__ import annotations

import mlrun


def output(step, key: str):
    """A step's result: a KFP placeholder on a cluster, the value itself on the local engine.

    On the local engine without an MLRun API, ``RunObject.outputs`` tries to fetch the
    step's artifacts from the (absent) DB and fails, so the results are read directly.
    """
    if isinstance(step, mlrun.model.RunObject):
        return step.status.results[key]
    return step.outputs[key]
