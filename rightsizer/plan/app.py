"""Plan a fleet from an application spec alone: each task's ``plan`` section names its model.

The fleet plan normally reads the decision records ``size_gpu`` writes after the ladder has
run. A hub-scale example (``tasks/examples/support_hub.yaml``) has no weights and no
measurements: each task spec says which model it is planned with (``plan: {model:
configs/<model>.json, precision: int8}``, a published ``config.json`` is enough) and the
app spec names the one-big-model baseline (``baseline: {model: configs/<model>.json}``).
:func:`decisions_from_app` builds the same decision-like records from those, so
:func:`rightsizer.plan.plan_fleet` plans them exactly as it plans a run's decisions; the
quality of every model is reported as not measured.

No MLRun here. CLI: ``python -m rightsizer plan --app PATH``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rightsizer.errors import ConfigError
from rightsizer.refs import is_hub_id
from rightsizer.plan.fleet import FleetPlan
from rightsizer.plan.solve import plan_fleet
from rightsizer.records import DecisionRecord, DecisionSLO, DecisionWorkload, Side
from rightsizer.sizing.params import count_params, load_config
from rightsizer.sizing.traffic import Lengths
from rightsizer.taskspec import TaskSpec, load_app, read_spec_yaml

NOT_MEASURED = "not measured"
_BASELINE_FIELDS = ("model", "name")
_PLAN_HINT = "plan: {model: <config.json path, relative to the spec>, precision: bf16|int8|int4|...}"


def _resolve(ref: str, base: Path) -> tuple[str, bool]:
    """(what to load, whether it is a local file): a path relative to ``base`` (or absolute),
    or, for a name like ``org/model`` that is no file and does not end in ``.json``, a hub id
    (``load_config`` fetches its config.json only)."""
    p = Path(ref)
    local = p if p.is_absolute() else base / p
    if local.exists() or not is_hub_id(ref):
        return str(local), True
    return ref, False


def _read_config(ref: str, base: Path, where: str, problems: list[str]) -> tuple[str, dict | None]:
    """(resolved path or hub id, config dict or None with a problem naming ``where``)."""
    resolved, local = _resolve(ref, base)
    if local and not Path(resolved).is_file():
        problems.append(f"{where}: config file not found: {resolved}")
        return resolved, None
    try:
        cfg = load_config(resolved)
        count_params(cfg)  # an architecture the sizing engine knows, with every field it needs
    except ConfigError as exc:
        problems.append(f"{where}: {exc}")
        return resolved, None
    return resolved, cfg


def _name(cfg: dict, given: str, ref: str) -> str:
    return given or str(cfg.get("_name_or_path") or Path(ref).stem)


def _side(name: str, ref: str, precision: str, cfg: dict) -> Side:
    return Side(model=name, params=count_params(cfg).total, precision=precision, config=cfg, config_path=ref,
                quality=None)


def decisions_from_app(path: str | Path) -> list[dict]:
    """Decision records (:class:`~rightsizer.records.DecisionRecord`, as JSON: the fields
    :func:`plan_fleet` reads) of every task of the app spec at ``path``: the chosen side from
    the task's ``plan`` section, the baseline side from the app's ``baseline`` section (or,
    without one, the largest planned model), the task's workload and SLO, and quality
    ``None`` (not measured).

    Every problem (a task without ``plan``, a missing or unreadable config file, a bad
    ``baseline`` section) is collected and raised in one ``ConfigError`` naming the file and
    the field."""
    return [r.to_dict() for r in _app_records(Path(path))]


def _app_records(path: Path) -> list[DecisionRecord]:
    """The records :func:`decisions_from_app` returns, as the type, sorted by task."""
    app = load_app(path)  # validates every task spec (plan.precision included)
    data = read_spec_yaml(path, "app spec")  # read (and checked) by load_app just above
    spec_files = [path.parent / ref for ref in data["tasks"]]
    problems: list[str] = []
    chosen: list[tuple[TaskSpec, Side | None]] = []
    for spec, spec_file in zip(app.tasks, spec_files):
        if spec.plan is None:
            problems.append(f"{spec_file}: plan: missing; --app plans each task's planned model ({_PLAN_HINT})")
            chosen.append((spec, None))
            continue
        ref, cfg = _read_config(spec.plan.model, Path(spec.base_dir), f"{spec_file}: plan.model", problems)
        chosen.append((spec, None if cfg is None else _side(_name(cfg, spec.plan.name, ref), ref,
                                                             spec.plan.precision, cfg)))
    baseline = _baseline(data.get("baseline"), path, problems)
    if problems:
        raise ConfigError(problems, str(path))
    if baseline is None:  # no baseline section: the largest planned model, bf16
        biggest = max((c for _, c in chosen if c), key=lambda c: c.params)
        baseline = biggest.replace(precision="bf16")
    records = [DecisionRecord(
        task=spec.name, metric=spec.metric, threshold=spec.threshold, decision_rule=spec.decision_rule,
        source=f"app spec {path} (plan section; no weights)", chosen=side, baseline=baseline,
        workload=DecisionWorkload.of(spec.workload, Lengths.from_spec(spec.workload.lengths, spec.name).to_dict()
                                     if spec.workload.lengths else None),
        slo=DecisionSLO.of(spec.slo)) for spec, side in chosen]
    return sorted(records, key=lambda r: r.task)


def _baseline(section: Any, app_path: Path, problems: list[str]) -> Side | None:
    """The app's ``baseline`` section ({model, name}), bf16 as every one-big-model baseline."""
    if section is None:
        return None
    where = f"{app_path}: baseline"
    if not isinstance(section, dict):
        problems.append(f"{where}: expected a mapping {{model: <config.json path>, name: ...}}, "
                        f"got {type(section).__name__}")
        return None
    for key in section:
        if key not in _BASELINE_FIELDS:
            problems.append(f"{where}.{key}: unknown field; expected one of {list(_BASELINE_FIELDS)} "
                            "(the baseline is always bf16)")
    model = section.get("model")
    if not isinstance(model, str) or not model.strip():
        problems.append(f"{where}.model: missing or not a string (a config.json path relative to the app spec)")
        return None
    name = section.get("name", "")
    if not isinstance(name, str):
        problems.append(f"{where}.name: expected a string, got {type(name).__name__}")
        name = ""
    ref, cfg = _read_config(model, app_path.parent, f"{where}.model", problems)
    return None if cfg is None else _side(_name(cfg, name, ref), ref, "bf16", cfg)


def plan_app(path: str | Path, **kwargs: Any) -> FleetPlan:
    """The fleet plan of an app spec's planned models (``plan_fleet``'s keyword arguments);
    the plan's ``quality`` says, per task, that nothing was measured."""
    plan = plan_fleet(_app_records(Path(path)), **kwargs)
    plan.notes.append(f"planned from the app spec {path}: each task's planned model from its published config "
                      f"(no weights); quality {NOT_MEASURED}")
    return plan


__all__ = ["decisions_from_app", "plan_app", "NOT_MEASURED"]
