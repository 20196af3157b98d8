"""What every task type provides, and the prediction record they share.

A task type owns everything that differs between kinds of task: its spec and row checks,
how few-shot examples are drawn, how a prediction is made (through an ``Engine``, the
inference core's model runner, so this package depends on no model code), its metrics and
extra quality figures, the serving response shape and the quantization tolerance rule.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from rightsizer.prompting import stop_strings

if TYPE_CHECKING:
    from rightsizer.schema.task import TaskSpec


@dataclass
class Predictions:
    """What a model answered for some rows; ``option_scores`` only for classification."""

    answers: list[str]
    option_scores: list[list[float]] | None
    seconds: float
    # free text: each answer's mean token log-probability, when asked for (``predict(confidence=True)``)
    answer_logprobs: list[float] | None = None


class Engine(Protocol):
    """The model runner a task type predicts with (``rightsizer.inference.Engine``)."""

    def score_options(self, prompts: list[str], options: list[str], batch_size: int = 32,
                      progress: bool = False) -> list[list[float]]: ...

    def generate(self, prompts: list[str], max_new_tokens: int, stop: tuple[str, ...],
                 batch_size: int = 16, progress: bool = False) -> list[str]: ...

    def answer_logprobs(self, prompts: list[str], answers: list[str], batch_size: int = 32) -> list[float]: ...


def _gold_ok(value: Any) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) for v in value)


class TaskType:
    """Base of the task types: the behaviour of free-text answers (extraction, generation).

    Subclasses set ``name`` and ``metrics`` and override what differs.
    """

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    #: where a generated answer ends in raw format unless the spec says (``prompting.stop_strings``):
    #: "newline" cuts at the first line break
    stop: ClassVar[str | None] = "newline"

    def check_spec(self, spec: TaskSpec, problems: list[str]) -> None:
        """Append the type's own spec problems (label options, ...)."""
        if spec.labels:
            problems.append(f"labels: only a classification task takes label options; a {self.name} "
                            f"task's answers are the {spec.label_field!r} field of each row")

    def prompt_fields(self, spec: TaskSpec) -> tuple[str, ...]:
        """The row fields a prompt template may use: the input field (serving receives that
        alone; ``{context}`` is added by the spec when the task declares retrieval)."""
        return (spec.input_field,)

    def check_rows(self, spec: TaskSpec, rows: list[dict], split: str) -> list[str]:
        """Problems with a split's rows (their gold answers), one line each."""
        bad = [i for i, r in enumerate(rows) if not _gold_ok(r[spec.label_field])]
        if not bad:
            return []
        return [f"dataset.{split}: {len(bad)} row(s) (first: row {bad[0]}) have a "
                f"{spec.label_field!r} that is not a string or a non-empty list of strings"]

    def answer_text(self, spec: TaskSpec, row: dict) -> str:
        """The answer a model should give for ``row`` (the first reference when there are several)."""
        gold = row[spec.label_field]
        return gold[0] if isinstance(gold, list) else str(gold)

    def pick_shots(self, spec: TaskSpec, rows: list[dict], k: int, rng: random.Random) -> list[dict]:
        """k solved examples for the few-shot prompt."""
        return rng.sample(rows, k)

    def predict(self, engine: Engine, spec: TaskSpec, prompts: list[str], batch_size: int = 32,
                progress: bool = False) -> tuple[list[str], list[list[float]] | None]:
        """Answers for the prompts (and option scores where the type has options)."""
        answers = engine.generate(prompts, spec.max_new_tokens, stop_strings(spec, self.stop),
                                  min(batch_size, 16), progress)
        return answers, None

    def scoring_inputs(self, spec: TaskSpec, gold: list, answers: list[str]) -> tuple[list, list[str]]:
        """What the metrics compare: the gold answers and the model's, as the type reads them
        (an extraction task with fields compares parsed field values)."""
        return gold, answers

    def quality_extras(self, spec: TaskSpec, gold: list, pred: Predictions,
                       values: dict[str, float]) -> dict[str, Any]:
        """Extra fields of the quality result beyond the metrics (calibration, ...)."""
        return {}

    def confidence(self, spec: TaskSpec, pred: Predictions) -> list[float] | None:
        """How sure the model is of each answer, in [0, 1], higher is surer: what a cascade
        (``rightsizer.cascade``) defers on. Free text: the geometric mean of its tokens'
        probabilities (exp of the mean token log-probability, ``pred.answer_logprobs``; None
        when the prediction did not ask for them)."""
        if pred.answer_logprobs is None:
            return None
        return [math.exp(lp) for lp in pred.answer_logprobs]

    def respond(self, engine: Engine, spec: TaskSpec, prompts: list[str], pred: Predictions,
                max_new_tokens: int | None = None) -> list[dict]:
        """The serving response for each prompt (``pred`` is what ``predict`` answered)."""
        return [{"task": spec.name, "generated": a} for a in pred.answers]

    def tolerance(self, spec: TaskSpec) -> float:
        """How far below the unquantized score a quantized model's score may fall (absolute)."""
        return spec.quality_tolerance
