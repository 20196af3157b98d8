"""Extraction: a short span copied or normalised from the input, scored by exact match / token F1.

A spec with an ``extraction:`` section names the answer's fields and their format; answers
(the model's and the gold ones) are then parsed and each field validated
(``parse_answer``). A malformed answer (not in the format, a missing or unknown field, a
value that breaks its rule) scores 0 and is counted in the quality's ``extraction`` figures
(malformed share, per-field accuracy); a well-formed one is scored on its field values, in
the spec's field order, so the order an answer writes them in does not matter.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from rightsizer import metrics
from rightsizer.tasktypes.base import Engine, Predictions, TaskType

if TYPE_CHECKING:
    from rightsizer.schema.task import ExtractionFields, TaskSpec


@dataclass
class ParsedAnswer:
    """The fields an answer holds, and what is wrong with it (empty: well-formed)."""

    fields: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems


def _split_key_value(text: str) -> tuple[dict[str, str], list[str]]:
    found, problems = {}, []
    for part in re.split(r"[;\n]", text):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition(":")
        if not sep:
            problems.append(f"{part!r} is not 'name: value'")
            continue
        key = key.strip().lower()
        if key in found:
            problems.append(f"field {key!r} given twice")
        found[key] = value.strip()
    return found, problems


def _split_json(text: str) -> tuple[dict[str, str], list[str]]:
    try:
        obj = json.loads(text)
    except ValueError as e:
        return {}, [f"not JSON ({e.msg})"]
    if not isinstance(obj, dict):
        return {}, [f"not a JSON object (a {type(obj).__name__})"]
    bad = [k for k, v in obj.items() if not isinstance(v, str)]
    problems = [f"field {k!r} is not a string" for k in bad]
    return {str(k).lower(): v.strip() for k, v in obj.items() if isinstance(v, str)}, problems


def parse_answer(rules: ExtractionFields, text: str) -> ParsedAnswer:
    """Parse ``text`` in the ``rules``' format and check every field against its rule."""
    found, problems = (_split_json if rules.format == "json" else _split_key_value)(str(text).strip())
    out = {}
    for name, rule in rules.fields.items():
        value = found.pop(name.lower(), None)
        if value is None:
            if rule.required:
                problems.append(f"field {name!r} is missing")
            continue
        if rule.pattern is not None and not re.fullmatch(rule.pattern, value):
            problems.append(f"field {name!r}: {value!r} does not match {rule.pattern!r}")
        elif rule.values is not None and value.lower() not in {v.lower() for v in rule.values}:
            problems.append(f"field {name!r}: {value!r} is not one of {rule.values}")
        out[name] = value
    problems += [f"unknown field {k!r}" for k in found]
    return ParsedAnswer(out, problems)


def _scored(rules: ExtractionFields, text: str) -> str:
    """What the metric compares: the field values in spec order, or "" when malformed."""
    parsed = parse_answer(rules, text)
    if not parsed.valid:
        return ""
    return " ; ".join(parsed.fields.get(n, "") for n in rules.fields)


class Extraction(TaskType):
    name = "extraction"
    metrics = ("exact_match", "token_f1")

    def check_rows(self, spec: TaskSpec, rows: list[dict], split: str) -> list[str]:
        problems = super().check_rows(spec, rows, split)
        if problems or spec.extraction is None:
            return problems
        for i, row in enumerate(rows):
            gold = row[spec.label_field]
            for ref in gold if isinstance(gold, list) else [gold]:
                parsed = parse_answer(spec.extraction, ref)
                if not parsed.valid:
                    return [f"dataset.{split}: row {i}: {spec.label_field} {ref!r} is not a valid "
                            f"extraction answer ({'; '.join(parsed.problems)}); the gold answers "
                            f"must be written as the extraction: section says ({spec.extraction.format})"]
        return []

    def scoring_inputs(self, spec: TaskSpec, gold: list, answers: list[str]) -> tuple[list, list[str]]:
        if spec.extraction is None:
            return gold, answers
        rules = spec.extraction
        g = [[_scored(rules, r) for r in x] if isinstance(x, list) else _scored(rules, x) for x in gold]
        return g, [_scored(rules, a) for a in answers]

    def quality_extras(self, spec: TaskSpec, gold: list, pred: Predictions,
                       values: dict[str, float]) -> dict[str, Any]:
        if spec.extraction is None:
            return {}
        rules = spec.extraction
        parsed = [parse_answer(rules, a) for a in pred.answers]
        refs = [parse_answer(rules, g[0] if isinstance(g, list) else g) for g in gold]
        bad = [(i, p) for i, p in enumerate(parsed) if not p.valid]
        per_field = {}
        for name in rules.fields:
            hits = [p.valid and metrics.normalize_answer(p.fields.get(name, "")) ==
                    metrics.normalize_answer(r.fields.get(name, "")) for p, r in zip(parsed, refs)]
            per_field[name] = sum(hits) / len(hits)
        return {"extraction": {
            "format": rules.format, "malformed": len(bad) / len(parsed), "malformed_count": len(bad),
            "field_accuracy": per_field,
            "malformed_examples": [{"row": i, "answer": pred.answers[i], "problems": p.problems}
                                   for i, p in bad[:3]]}}

    def confidence(self, spec: TaskSpec, pred: Predictions) -> list[float] | None:
        """A malformed answer is sure of nothing (0); a valid one's is its tokens' (the base rule)."""
        sure = super().confidence(spec, pred)
        if sure is None or spec.extraction is None:
            return sure
        return [c if parse_answer(spec.extraction, a).valid else 0.0 for c, a in zip(sure, pred.answers)]

    def respond(self, engine: Engine, spec: TaskSpec, prompts: list[str], pred: Predictions,
                max_new_tokens: int | None = None) -> list[dict]:
        """The generated answer, and with an ``extraction:`` section its parsed fields,
        ``valid`` and what is wrong with it (``problems``)."""
        out = super().respond(engine, spec, prompts, pred, max_new_tokens)
        if spec.extraction is not None:
            for r in out:
                parsed = parse_answer(spec.extraction, r["generated"])
                r.update(fields=parsed.fields, valid=parsed.valid, problems=parsed.problems)
        return out
