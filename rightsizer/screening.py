"""Screening: score a rung on a small part of the eval split first, and go on to the full
split only while the candidate can still pass.

The eval rows are visited in a fixed random order, in stages of ``min_examples``, then
``growth`` times as many, ... up to the whole split; no row is scored twice. After every
stage but the last, the score the full split could still reach is bounded from above:

* decomposable metrics (accuracy, exact match, token F1, ROUGE-L are means of per-example
  scores in [0, 1]): the rows already scored count as they are; the mean of the rows not
  yet scored is bounded by the one-sided Wilson upper bound of the per-example mean so far
  (valid for [0, 1] scores, whose variance is at most p(1 - p), and not degenerate when
  every row so far scored 0), so ``bound = (sum_seen + (N - n) * upper_mean) / N``;
* macro-F1 (not a mean): the one-sided bootstrap upper bound of the metric so far.

The level ``alpha`` is split evenly over the looks (Bonferroni), so a rung whose full-split
score clears the bar is stopped early with probability about ``alpha`` at most (bootstrap
bounds are approximate on very small stages). A rung is only ever *passed* on the full
split, so a pass is the same decision the full evaluation makes. Under the ``ci_lower``
rule the full-split value is the CI's lower end, which is below the score, so the bound on
the score bounds it too.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import dataclass, field

from rightsizer import metrics, tasktypes
from rightsizer.evaluate import QualityResult, score_predictions
from rightsizer.inference import Predictions, predict
from rightsizer.taskspec import Screening, TaskSpec

N_BOOT = 1000


def stage_sizes(n: int, min_examples: int, growth: float) -> list[int]:
    """Cumulative numbers of rows scored after each stage, ending with ``n``."""
    sizes, size = [], min(min_examples, n)
    while size < n:
        sizes.append(size)
        size = max(size + 1, int(math.ceil(size * growth)))
    return sizes + [n]


def upper_bound(spec: TaskSpec, gold: list, answers: list[str], n_total: int,
                alpha: float, seed: int = 0) -> float:
    """One-sided (1 - alpha) upper bound of the full split's score, from the rows seen so far."""
    n = len(gold)
    gold, answers = tasktypes.get(spec.type).scoring_inputs(spec, gold, answers)
    if spec.metric not in metrics.DECOMPOSABLE:
        vals = metrics.bootstrap(spec.metric, gold, answers, spec.labels, n_boot=N_BOOT, seed=seed)
        return metrics.percentile(vals, 1 - alpha)
    seen = sum(metrics.per_example(spec.metric, gold, answers))
    return (seen + (n_total - n) * wilson_upper(seen / n, n, alpha)) / n_total


def wilson_upper(mean: float, n: int, alpha: float) -> float:
    """One-sided (1 - alpha) Wilson score upper bound of a mean of n values in [0, 1]."""
    z = statistics.NormalDist().inv_cdf(1 - alpha)
    z2 = z * z
    centre = mean + z2 / (2 * n)
    spread = z * math.sqrt(max(mean * (1 - mean), 0.0) / n + z2 / (4 * n * n))
    return min(1.0, (centre + spread) / (1 + z2 / n))


@dataclass
class Screened:
    """A rung's quality, from the full split or from the part it was stopped on."""

    quality: QualityResult
    n_total: int
    stopped: bool
    stages: list[int] = field(default_factory=list)
    bounds: list[float] = field(default_factory=list)  # upper bound after each look

    @property
    def bound(self) -> float | None:
        return self.bounds[-1] if self.bounds else None


def screened_quality(model, tokenizer, spec: TaskSpec, rows: list[dict], threshold: float,
                     shots: list[dict] | None = None, screening: Screening | None = None,
                     progress: bool = False, seed: int = 0) -> Screened:
    """Quality of one rung with early stopping when it cannot reach ``threshold``."""
    sc = screening or spec.screening
    n = len(rows)
    sizes = stage_sizes(n, sc.min_examples, sc.growth) if sc.enabled else [n]
    alpha = sc.alpha / max(1, len(sizes) - 1)
    order = random.Random(seed).sample(range(n), n)
    answers: dict[int, str] = {}
    scores: dict[int, list[float]] = {}
    start, done = time.perf_counter(), 0
    bounds: list[float] = []
    for size in sizes:
        idx = order[done:size]
        p = predict(model, tokenizer, spec, [rows[i] for i in idx], shots, progress=progress)
        answers.update(zip(idx, p.answers))
        if p.option_scores is not None:
            scores.update(zip(idx, p.option_scores))
        done = size
        if size < n:
            seen = order[:size]
            bound = upper_bound(spec, [rows[i][spec.label_field] for i in seen],
                                [answers[i] for i in seen], n, alpha, seed)
            bounds.append(bound)
            if bound < threshold:
                return Screened(_score(spec, rows, seen, answers, scores, start), n, True,
                                sizes[:sizes.index(size) + 1], bounds)
    # the full split, scored in the original row order (same result as a full evaluation)
    return Screened(_score(spec, rows, range(n), answers, scores, start), n, False, sizes, bounds)


def _score(spec, rows, idx, answers, scores, start) -> QualityResult:
    idx = sorted(idx)
    pred = Predictions([answers[i] for i in idx],
                       [scores[i] for i in idx] if scores else None, 0.0)
    q = score_predictions(spec, [rows[i] for i in idx], pred)
    q.seconds = time.perf_counter() - start
    return q
