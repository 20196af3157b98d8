"""Helpers the workflows share: run a step and read its outputs on either engine."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import mlrun
from kfp import dsl


def run_step(project, function: str, **kwargs):
    """``project.run_function`` that fails fast on the local engine.

    Without an MLRun API, a local step that raises comes back as a run still in state
    'created' (the NopDB never records the error), and the local engine then waits for it
    forever. Mark it as an error and stop the workflow with one line: the step's name (which
    names the task) and the reason, the error MLRun logged for it.
    """
    with _StepErrors() as errors:
        step = project.run_function(function, **kwargs)
    if isinstance(step, mlrun.model.RunObject) and step.status.state != "completed":
        step.status.state = "error"
        reason = errors.reasons[-1] if errors.reasons else "see its error logged above"
        raise RuntimeError(f"step {kwargs.get('name', function)!r} failed: {reason}")
    return step


class _StepErrors(logging.Handler):
    """The errors MLRun's local runtime logs for a failed step ("Exec error - <reason>"):
    the run object it returns offline carries no error."""

    PREFIX = "Exec error - "

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.reasons: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if message.startswith(self.PREFIX):
            first = message[len(self.PREFIX):].strip().splitlines()
            self.reasons.append(first[0] if first else "")

    def __enter__(self) -> "_StepErrors":
        logging.getLogger("mlrun").addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        logging.getLogger("mlrun").removeHandler(self)


def output(step, key: str):
    """A step's result: a KFP placeholder on a cluster, the value itself on the local engine.

    On the local engine without an MLRun API, ``RunObject.outputs`` tries to fetch the
    step's artifacts from the (absent) DB and fails, so the results are read directly.
    """
    if isinstance(step, mlrun.model.RunObject):
        return step.status.results[key]
    return step.outputs[key]


@contextmanager
def when(value, expected) -> Iterator[bool]:
    """Build the body's steps only for runs where a step's output equals ``expected``.

    On KFP the output is a placeholder until run time: the body goes under a
    ``dsl.Condition`` and is always built (yields True). On the local engine the output is
    the value itself: yields whether it matches, and the body runs its steps only then.
    Both compare text, as KFP does: MLRun writes a result for KFP as ``str(value)``, so a
    bool result is "True" or "False" there and ``expected`` may be the bool.
    """
    if isinstance(value, dsl.PipelineParam):
        with dsl.Condition(value == str(expected)):
            yield True
    else:
        yield str(value) == str(expected)


def after(step, *steps) -> None:
    """On KFP, order ``step`` after the given steps (those that are not None): for an input
    it reads from the run's layout rather than from an output. A no-op on the local engine,
    which runs the steps in order."""
    if step is not None and not isinstance(step, mlrun.model.RunObject):
        for dep in steps:
            if dep is not None:
                step.after(dep)
