"""Classification: pick one of the spec's label options, by log-likelihood, not by parsing text.

Each option is appended to the prompt and the option with the highest total log-probability
wins; the softmax over the options' log-likelihoods gives class probabilities, whose
calibration (ECE, Brier, raw and after temperature scaling) is reported with the quality.
"""

from __future__ import annotations

import math
import random
from typing import TYPE_CHECKING, Any

from rightsizer import metrics
from rightsizer.tasktypes.base import Engine, Predictions, TaskType

if TYPE_CHECKING:
    from rightsizer.schema.task import TaskSpec


def softmax(row: list[float], t: float = 1.0) -> list[float]:
    """Probabilities from log-likelihood scores at temperature ``t``."""
    m = max(row)
    e = [math.exp((v - m) / t) for v in row]
    z = sum(e)
    return [v / z for v in e]


class Classification(TaskType):
    name = "classification"
    metrics = ("accuracy", "macro_f1")
    stop = None  # the serving response's free generation is not an answer; keep it whole

    def check_spec(self, spec: TaskSpec, problems: list[str]) -> None:
        if len(spec.labels) < 2:
            problems.append("labels: a classification task needs at least two label options")
        if len(set(spec.labels)) != len(spec.labels):
            problems.append(f"labels: duplicates in {spec.labels}")

    def check_rows(self, spec: TaskSpec, rows: list[dict], split: str) -> list[str]:
        values = [r[spec.label_field] for r in rows]
        # compared as written: an integer label 1 is not the option "1"
        bad = sorted({v for v in values if not isinstance(v, str) or v not in spec.labels}, key=repr)
        if not bad:
            return []
        return [f"dataset.{split}: label(s) {bad} are not in labels {spec.labels} "
                "(labels are compared as strings, exactly)"]

    def answer_text(self, spec: TaskSpec, row: dict) -> str:
        return str(row[spec.label_field])

    def pick_shots(self, spec: TaskSpec, rows: list[dict], k: int, rng: random.Random) -> list[dict]:
        """k examples spread over the labels (round robin), in a shuffled order."""
        by_label: dict[str, list[dict]] = {}
        for row in rows:
            by_label.setdefault(row[spec.label_field], []).append(row)
        shots: list[dict] = []
        pools = [rng.sample(v, len(v)) for _, v in sorted(by_label.items())]
        while len(shots) < k:
            for pool in pools:
                if pool and len(shots) < k:
                    shots.append(pool.pop())
        rng.shuffle(shots)
        return shots

    def predict(self, engine: Engine, spec: TaskSpec, prompts: list[str], batch_size: int = 32,
                progress: bool = False) -> tuple[list[str], list[list[float]] | None]:
        scores = engine.score_options(prompts, spec.labels, batch_size, progress)
        answers = [spec.labels[max(range(len(row)), key=row.__getitem__)] for row in scores]
        return answers, scores

    def quality_extras(self, spec: TaskSpec, gold: list, pred: Predictions,
                       values: dict[str, float]) -> dict[str, Any]:
        extras: dict[str, Any] = {"accuracy": values["accuracy"], "macro_f1": values["macro_f1"]}
        if pred.option_scores is None:
            return extras
        gold_idx = [spec.labels.index(g) for g in gold]
        t = metrics.fit_temperature(pred.option_scores, gold_idx)
        raw = [softmax(r) for r in pred.option_scores]
        cal = [softmax(r, t) for r in pred.option_scores]
        correct = [g == a for g, a in zip(gold, pred.answers)]
        extras["mean_confidence"] = sum(max(p) for p in raw) / len(raw)
        extras["calibration"] = {
            "ece": metrics.expected_calibration_error([max(p) for p in raw], correct),
            "brier": metrics.brier(raw, gold_idx), "temperature": t,
            "ece_calibrated": metrics.expected_calibration_error([max(p) for p in cal], correct),
            "brier_calibrated": metrics.brier(cal, gold_idx)}
        return extras

    def confidence(self, spec: TaskSpec, pred: Predictions) -> list[float] | None:
        """The answer's class probability (softmax over the options' log-likelihoods): the
        top one, the probability the served response reports for its label."""
        if pred.option_scores is None:
            return None
        return [max(softmax(row)) for row in pred.option_scores]

    def respond(self, engine: Engine, spec: TaskSpec, prompts: list[str], pred: Predictions,
                max_new_tokens: int | None = None) -> list[dict]:
        """Label, class probabilities and a short free generation for each prompt."""
        n_new = max_new_tokens or spec.workload.output_tokens
        texts = engine.generate(prompts, n_new, (), batch_size=max(1, len(prompts)))
        out = []
        for answer, scores, text in zip(pred.answers, pred.option_scores or [], texts):
            probs = softmax(scores)
            out.append({"task": spec.name, "generated": text, "label": answer,
                        "probabilities": {lab: round(p, 4) for lab, p in zip(spec.labels, probs)}})
        return out
