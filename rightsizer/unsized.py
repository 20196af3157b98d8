"""Tasks that cannot be sized, and what that does to the application's deployment.

A task whose bar no candidate reaches does not hide the others: its select step logs its
selection (``passed`` false, the summary and what would be needed) instead of failing, the
task's later steps are skipped, and every other task's steps still run. The plan, report and
deploy steps then see which tasks were sized (their decision records) and which were not
(:func:`unsized_entry`). The application needs all of its tasks, so by default nothing is
deployed and the workflow fails after the report with :func:`missing_message`; with
``deploy_partial`` the sized tasks are planned and deployed, and the report says which
tasks are missing. A genuine error in a select step (a bad spec, a missing model) still
fails it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from rightsizer.layout import RunLayout
from rightsizer.select import Selection
from rightsizer.size_gpu import load_record


def unsized_entry(sel: Selection) -> dict:
    """What the plan and report show for a task whose bar no candidate reaches: its bar, the
    ladder's summary ("NO candidate reaches ... Would be needed: ..."), what would be needed
    (one line each), the rungs tried (``ladder``, as in a decision record) and the candidates
    by size (``order``)."""
    if sel.passed:
        raise ValueError(f"{sel.task}: {sel.chosen.candidate} passes its bar; the task is sized")
    return {"task": sel.task, "metric": sel.metric, "threshold": sel.threshold,
            "decision_rule": sel.decision_rule, "summary": sel.summary(), "needs": sel.needs(),
            "ladder": [r.to_dict() for r in sel.tried], "order": [list(o) for o in sel.order],
            "dropped": list(sel.dropped)}


def split_selections(paths: Iterable[str | Path]) -> tuple[list[str], list[dict]]:
    """The tasks of the select steps' selections (``Selection.save`` files) that were sized,
    by name, and an :func:`unsized_entry` for each of the others, both in the given order."""
    sized, unsized = [], []
    for path in paths:
        sel = Selection.load(path)
        if sel.passed:
            sized.append(sel.task)
        else:
            unsized.append(unsized_entry(sel))
    return sized, unsized


def load_outcomes(paths: Iterable[str | Path], layout: RunLayout) -> tuple[list[dict], list[dict]]:
    """The decision records of the sized tasks and the entries of the unsized ones.

    A sized task's record is read from the run's ``layout`` (its size_gpu step's
    ``decision.json``), not passed on as a step output: on KFP that step runs under a condition
    on the select step's outcome, and a skipped step's output cannot be referenced.
    """
    sized, unsized = split_selections(paths)
    records = []
    for task in sized:
        path = layout.decision_file(task)
        if not path.is_file():
            raise FileNotFoundError(f"{task}: sized by its select step, but its decision record {path} "
                                    "is missing (its size_gpu step did not finish in this run)")
        records.append(load_record(path))
    return records, unsized


def deploys(sized: list[str], unsized: list[dict], partial: bool) -> bool:
    """Whether the application is deployed: every task sized, or ``partial`` (the
    ``deploy_partial`` param) and at least one task sized."""
    return bool(sized) and (not unsized or partial)


def missing_message(sized: list[str], unsized: list[dict], deployed: bool) -> str:
    """One line on the tasks that cannot be sized ("" when there are none).

    Deployed (``deploy_partial``): which tasks the deployment is missing. Not deployed: why
    the workflow stops before deploying, each unsized task's summary with what would be
    needed, and how to deploy the others anyway."""
    if not unsized:
        return ""
    names = ", ".join(u["task"] for u in unsized)
    details = " ".join(u["summary"].replace("\n", " ") for u in unsized)
    if deployed:
        return (f"deployed without {names} (deploy_partial is true): no candidate reaches "
                f"{'its' if len(unsized) == 1 else 'their'} bar, so requests for "
                f"{'it' if len(unsized) == 1 else 'them'} have no model. {details}")
    total = len(sized) + len(unsized)
    if not sized:
        return (f"nothing deployed: no task of the application can be sized ({len(unsized)} of "
                f"{total}). {details}")
    return (f"nothing deployed: the application needs all its tasks and {len(unsized)} of its "
            f"{total} cannot be sized. {details} To deploy the other "
            f"task{'s' if len(sized) > 1 else ''} ({', '.join(sized)}) without {names}, set the "
            "workflow argument or project param deploy_partial=true.")


def not_deployed_reason(root: str | Path, task: str) -> str | None:
    """Why the size_and_deploy run whose artifacts are at ``root`` has no model for ``task``
    because it could not size it (the re-evaluation then has nothing to score), or None: the
    task has a bundle there, or the run never selected it (that stays an error for the
    caller, with its own message)."""
    layout = RunLayout(Path(root))
    selection = layout.selection_file(task)
    if layout.bundle_dir(task).is_dir() or not selection.is_file():
        return None
    sel = Selection.load(selection)
    if sel.passed:
        return None
    verdict = sel.summary().replace("\n", " ").partition(" Would be needed: ")[0]
    return (f"not deployed: the size_and_deploy run at {root} could not size {task} "
            f"({verdict}); nothing to re-evaluate until a run sizes it")


def parse_flag(value, name: str) -> bool:
    """A true/false setting given as a bool or as "true"/"false" (any case): a workflow
    argument arrives as a string. Anything else is a ValueError naming ``name``."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"{name}: {value!r}; expected true or false")
