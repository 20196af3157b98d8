"""The decision record as a type: one task's choice beside the one-big-model baseline.

Two builders construct a :class:`DecisionRecord`: ``rightsizer.size_gpu.build_record`` (a
ladder run: the chosen model measured and sized, with the evidence) and
``rightsizer.plan.app.decisions_from_app`` (an app spec's planned models: no weights, quality
not measured). Both write its JSON (:meth:`DecisionRecord.to_dict`); every reader (the fleet
plan, the report, the CLI) reads that JSON back through :meth:`DecisionRecord.from_dict`
(:func:`as_record`), the one place that knows the fields and checks them.

Versions: a record, the report's ``decisions.json`` and the fleet plan carry
``schema_version``; JSON written before the field existed is version 1 (the same fields).
A version newer than this code knows is a ``ConfigError`` naming the file: its fields may
mean something this code would misread.

Optional fields: a field the builder did not give (or the JSON does not have) reads as None
and stays out of :meth:`to_dict`, so a record's JSON is exactly what its builder wrote, and a
record read from JSON writes back the same keys. No MLRun here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from rightsizer.errors import ConfigError

DECISION_SCHEMA_VERSION = 1  # a task's decision record (size_gpu's decision.json)
DECISIONS_SCHEMA_VERSION = 1  # the report's decisions.json (every record of a run)
PLAN_SCHEMA_VERSION = 1  # the fleet plan (FleetPlan.to_dict, the plan step's fleet_plan.json)

_ABSENT: Any = object()  # a field the builder did not give: None to readers, left out of to_dict


def _optional() -> Any:
    return field(default=_ABSENT, metadata={"optional": True})


def check_schema_version(data: Mapping[str, Any], known: int, what: str, source: str) -> int:
    """The ``schema_version`` of ``data`` (1 when it has none: written before the field
    existed); a ConfigError naming ``source`` when it is not a positive integer or newer
    than ``known``, the version this code writes and reads."""
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ConfigError(f"{what}: schema_version: expected a positive integer, got {version!r}", source=source)
    if version > known:
        raise ConfigError(f"{what}: schema_version {version} is newer than this rightsizer reads ({known}); "
                          "update rightsizer to read it", source=source)
    return version


class _Fields:
    """``to_dict``/``from_dict`` of the record types: required fields, optional ones (left out
    of the JSON when not given), nested types (``_NESTED``) and, in ``extra``, any other key
    (kept, so a record read and written again loses nothing)."""

    _NESTED: ClassVar[dict[str, type]] = {}
    extra: dict[str, Any]
    _given: frozenset[str]

    def __post_init__(self) -> None:
        given = set()
        for f in fields(self):  # type: ignore[arg-type]
            if f.metadata.get("optional"):
                if getattr(self, f.name) is _ABSENT:
                    object.__setattr__(self, f.name, None)
                else:
                    given.add(f.name)
        object.__setattr__(self, "_given", frozenset(given))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):  # type: ignore[arg-type]
            if f.name in ("extra", "_given") or (f.metadata.get("optional") and f.name not in self._given):
                continue
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, _Fields) else value
        out.update(self.extra)
        return out

    def replace(self, **changes: Any) -> Any:
        """A copy with ``changes``; the fields this one was not given stay out of its JSON."""
        kwargs = {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                  if f.init and (not f.metadata.get("optional") or f.name in self._given)}
        return type(self)(**{**kwargs, **changes})

    @classmethod
    def _read(cls, data: Any, where: str, problems: list[str]) -> Any:
        """An instance from ``data``, or None with what is wrong added to ``problems``."""
        if not isinstance(data, Mapping):
            problems.append(f"{where}: expected a mapping, got {type(data).__name__}")
            return None
        known = {f.name: f for f in fields(cls) if f.name not in ("extra", "_given")}  # type: ignore[arg-type]
        before = len(problems)
        kwargs: dict[str, Any] = {}
        for name, f in known.items():
            if name not in data:
                if not f.metadata.get("optional"):
                    problems.append(f"{where}: missing required field {name!r}")
                continue
            nested = cls._NESTED.get(name)
            value = data[name]
            if nested is not None and not (value is None and f.metadata.get("optional")):
                value = nested._read(value, f"{where}.{name}", problems)
            kwargs[name] = value
        if len(problems) > before:
            return None
        extra = {k: v for k, v in data.items() if k not in known and k != "schema_version"}
        return cls(**kwargs, extra=extra)  # type: ignore[call-arg]


@dataclass(frozen=True)
class Side(_Fields):
    """One side of a decision: the chosen model or the one-big-model baseline.

    ``model``, ``params``, ``precision`` (sized and served in), ``quality`` (None: not
    measured) and ``config`` (what the sizing engine reads) are in every record; the rest is
    ``size_gpu``'s: the device it was sized for and its modelled figures, the memory split,
    how it was evaluated and measured. ``config_path``: an app spec's planned model."""

    model: str | None = _optional()
    params: int | float | None = _optional()
    rung: str | None = _optional()
    precision: str | None = _optional()
    gpu: str | None = _optional()  # the device option's label, or "none (<why>)"
    quality: float | None = _optional()
    ttft_ms: float | None = _optional()
    tpot_ms: float | None = _optional()
    memory_bytes: int | None = _optional()
    cost_per_1m_tokens: float | None = _optional()
    sizing_mode: str | None = _optional()
    price_per_hour: float | None = _optional()
    throughput_tokens_per_s: float | None = _optional()
    max_throughput_tokens_per_s: float | None = _optional()
    replicas: int | None = _optional()
    weights_bytes: int | None = _optional()
    kv_activation_bytes: int | None = _optional()
    reserve_bytes: int | None = _optional()
    prompt_format: str | None = _optional()
    sizing_rules: str | None = _optional()  # the family whose rules sized it, "generic", or None
    config: dict[str, Any] | None = _optional()
    config_path: str | None = _optional()
    measured_here: dict[str, Any] | None = _optional()  # the evaluate step's latency
    measured_with: dict[str, Any] | None = _optional()  # device and dtype it was measured on
    measured_by_batch: list[dict[str, Any]] | None = _optional()
    retrieval_recall_at_k: float | None = _optional()  # the chosen side only
    extraction: dict[str, Any] | None = _optional()  # the chosen side only
    extra: dict[str, Any] = field(default_factory=dict)
    _given: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)


@dataclass(frozen=True)
class DecisionWorkload(_Fields):
    """The task's workload: prompt and output tokens, ``batch`` concurrent sequences."""

    prompt_tokens: int | None = _optional()
    output_tokens: int | None = _optional()
    batch: int | None = _optional()
    # the requests' length histogram (``sizing.traffic.Lengths.to_dict``), measured on the eval split
    lengths: dict[str, Any] | None = _optional()
    extra: dict[str, Any] = field(default_factory=dict)
    _given: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    @classmethod
    def of(cls, shape: Any, lengths: dict[str, Any] | None = None) -> "DecisionWorkload":
        """The record of a task spec's ``workload`` section: the one conversion."""
        return cls(prompt_tokens=shape.prompt_tokens, output_tokens=shape.output_tokens, batch=shape.batch,
                   **({"lengths": lengths} if lengths else {}))


@dataclass(frozen=True)
class DecisionSLO(_Fields):
    """The task's latency and throughput targets."""

    ttft_ms: float | None = _optional()
    tpot_ms: float | None = _optional()
    throughput_tokens_per_s: float | None = _optional()
    extra: dict[str, Any] = field(default_factory=dict)
    _given: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    @classmethod
    def of(cls, targets: Any) -> "DecisionSLO":
        """The record of a task spec's ``slo`` section: the one conversion."""
        return cls(ttft_ms=targets.ttft_ms, tpot_ms=targets.tpot_ms,
                   throughput_tokens_per_s=targets.throughput_tokens_per_s)


@dataclass(frozen=True)
class DecisionRecord(_Fields):
    """One task's decision: ``chosen`` beside ``baseline``, the task's bar, workload and SLO.

    Required: ``task`` and ``chosen``. ``size_gpu`` adds the evidence (the ladder, why not
    smaller, the precision search, the device ranking, the LoRA runs, the price list, a
    summary line); an app spec's record says where it came from (``source``)."""

    _NESTED: ClassVar[dict[str, type]] = {"chosen": Side, "baseline": Side, "workload": DecisionWorkload,
                                          "slo": DecisionSLO}

    task: str
    chosen: Side
    metric: str | None = _optional()
    threshold: float | None = _optional()
    decision_rule: str | None = _optional()
    source: str | None = _optional()  # an app spec's record: which spec, no weights
    baseline: Side | None = _optional()
    ladder_measured_with: dict[str, Any] | None = _optional()
    serving_engine: dict[str, Any] | None = _optional()
    slo: DecisionSLO | None = _optional()
    workload: DecisionWorkload | None = _optional()
    why_not_smaller: list[str] | None = _optional()
    ladder: list[dict[str, Any]] | None = _optional()  # RungResult.to_dict() per rung tried
    precision_search: list[dict[str, Any]] | None = _optional()
    gpu_options: list[dict[str, Any]] | None = _optional()
    price_list: dict[str, Any] | None = _optional()
    lora: dict[str, Any] | None = _optional()  # a LoRA choice's screening and production runs
    cascade: dict[str, Any] | None = _optional()  # ladder.cascade: the pairs judged and priced (size_gpu.price_cascade)
    traffic: dict[str, Any] | None = _optional()  # p95 at the planned request rate, open loop (size_gpu.at_planned_rate)
    summary: str | None = _optional()
    extra: dict[str, Any] = field(default_factory=dict)
    _given: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The record's JSON: the builder's fields and ``schema_version``."""
        return {**super().to_dict(), "schema_version": DECISION_SCHEMA_VERSION}

    def cascade_pair(self) -> dict[str, Any] | None:
        """The ladder's kept cascade pair as size_gpu priced it (``cascade.small_side`` set),
        or None."""
        c = self.cascade or {}
        if c.get("kept") is None or "small_side" not in c:
            return None
        return c["pairs"][c["kept"]]

    @classmethod
    def from_dict(cls, data: Any, source: str = "decisions") -> DecisionRecord:
        """The record in ``data`` (its JSON, as any version up to this one wrote it). A
        ConfigError naming ``source`` and the task lists every field that is missing or not
        a mapping where one is needed, or says the record is of a newer version."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"not a decision record: expected a mapping, got {type(data).__name__}", source=source)
        where = f"decision of task {data['task']!r}" if "task" in data else "decision record"
        check_schema_version(data, DECISION_SCHEMA_VERSION, where, source)
        problems: list[str] = []
        record = cls._read(data, where, problems)
        if problems:
            raise ConfigError(problems, source=source)
        return record


def as_record(record: DecisionRecord | Mapping[str, Any], source: str = "decisions") -> DecisionRecord:
    """``record`` as a :class:`DecisionRecord`: itself, or read from its JSON."""
    return record if isinstance(record, DecisionRecord) else DecisionRecord.from_dict(record, source)


def record_dict(record: DecisionRecord | Mapping[str, Any], source: str = "decisions") -> dict[str, Any]:
    """``record``'s JSON, checked by the reader: what code that draws or tabulates it reads."""
    return as_record(record, source).to_dict()


__all__ = ["DecisionRecord", "Side", "DecisionWorkload", "DecisionSLO", "as_record", "record_dict",
           "check_schema_version", "DECISION_SCHEMA_VERSION", "DECISIONS_SCHEMA_VERSION", "PLAN_SCHEMA_VERSION"]
