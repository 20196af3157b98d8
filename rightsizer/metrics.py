"""Task metrics, in pure Python (no metric downloads at run time).

* classification: ``accuracy``, ``macro_f1`` over the label options; calibration of the
  option probabilities is measured with ``expected_calibration_error`` and ``brier``.
* extraction: ``exact_match`` and ``token_f1`` after SQuAD-style normalisation (lower
  case, punctuation and articles removed, whitespace collapsed).
* generation: ``rouge_l`` (F-measure of the longest common token subsequence, as in
  Lin 2004 with beta = 1).

Every metric lies in [0, 1]. A gold answer may be a string or a list of acceptable
strings; per-example scores take the best reference. Metrics other than ``macro_f1`` are
means of per-example scores ("decomposable"), which screening uses to bound the score of
the full eval split from a part of it.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections import Counter
from typing import Callable, Sequence

# Which metrics a task type reports is the task type's (``rightsizer.tasktypes``).
DECOMPOSABLE = ("accuracy", "exact_match", "token_f1", "rouge_l")
METRIC_RANGE = {name: (0.0, 1.0) for name in (*DECOMPOSABLE, "macro_f1")}

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation or articles, single spaces (SQuAD normalisation)."""
    text = _ARTICLES.sub(" ", str(text).lower().translate(_PUNCT))
    return " ".join(text.split())


def _refs(gold) -> list[str]:
    return [str(g) for g in gold] if isinstance(gold, (list, tuple)) else [str(gold)]


def exact_match_one(gold, pred: str) -> float:
    p = normalize_answer(pred)
    return float(any(normalize_answer(g) == p for g in _refs(gold)))


def _f1_tokens(g: list[str], p: list[str]) -> float:
    if not g or not p:
        return float(g == p)
    common = sum((Counter(g) & Counter(p)).values())
    if common == 0:
        return 0.0
    prec, rec = common / len(p), common / len(g)
    return 2 * prec * rec / (prec + rec)


def token_f1_one(gold, pred: str) -> float:
    p = normalize_answer(pred).split()
    return max(_f1_tokens(normalize_answer(g).split(), p) for g in _refs(gold))


def _lcs(a: list[str], b: list[str]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, start=1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l_one(gold, pred: str) -> float:
    """ROUGE-L F1 on lower-cased whitespace tokens (punctuation stripped)."""
    p = str(pred).lower().translate(_PUNCT).split()
    best = 0.0
    for g in _refs(gold):
        t = g.lower().translate(_PUNCT).split()
        if not t or not p:
            best = max(best, float(t == p))
            continue
        lcs = _lcs(t, p)
        if lcs:
            prec, rec = lcs / len(p), lcs / len(t)
            best = max(best, 2 * prec * rec / (prec + rec))
    return best


def accuracy_one(gold, pred: str) -> float:
    return float(gold == pred)


PER_EXAMPLE: dict[str, Callable] = {"accuracy": accuracy_one, "exact_match": exact_match_one,
                                    "token_f1": token_f1_one, "rouge_l": rouge_l_one}


def macro_f1(gold: Sequence[str], pred: Sequence[str], labels: Sequence[str]) -> float:
    f1s = []
    for lab in labels:
        tp = sum(g == lab and p == lab for g, p in zip(gold, pred))
        fp = sum(g != lab and p == lab for g, p in zip(gold, pred))
        fn = sum(g == lab and p != lab for g, p in zip(gold, pred))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / len(f1s)


def per_example(metric: str, gold: Sequence, pred: Sequence[str]) -> list[float]:
    """Per-example scores of a decomposable metric."""
    fn = PER_EXAMPLE[metric]
    return [fn(g, p) for g, p in zip(gold, pred)]


def compute(metric: str, gold: Sequence, pred: Sequence[str],
            labels: Sequence[str] = ()) -> float:
    """The metric over a set of examples."""
    if not gold:
        raise ValueError("no examples to score")
    if metric == "macro_f1":
        return macro_f1(gold, pred, labels)
    if metric not in PER_EXAMPLE:
        raise KeyError(f"unknown metric {metric!r}")
    s = per_example(metric, gold, pred)
    return sum(s) / len(s)


def bootstrap(metric: str, gold: Sequence, pred: Sequence[str], labels: Sequence[str] = (),
              n_boot: int = 500, seed: int = 0) -> list[float]:
    """Sorted bootstrap replicates of the metric (resampling examples with replacement)."""
    rng = random.Random(seed)
    n = len(gold)
    vals = []
    if metric in PER_EXAMPLE:  # mean of per-example scores: resample the scores
        s = per_example(metric, gold, pred)
        for _ in range(n_boot):
            vals.append(sum(s[rng.randrange(n)] for _ in range(n)) / n)
    else:
        for _ in range(n_boot):
            idx = [rng.randrange(n) for _ in range(n)]
            vals.append(compute(metric, [gold[i] for i in idx], [pred[i] for i in idx], labels))
    vals.sort()
    return vals


def percentile(sorted_vals: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, nearest rank."""
    return sorted_vals[min(len(sorted_vals) - 1, max(0, int(q * len(sorted_vals))))]


def bootstrap_ci(gold: list, pred: list[str], labels: list[str], metric: str,
                 n_boot: int = 500, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the metric over eval examples."""
    vals = bootstrap(metric, gold, pred, labels, n_boot=n_boot, seed=seed)
    return vals[int(alpha / 2 * n_boot)], vals[min(n_boot - 1, int((1 - alpha / 2) * n_boot))]


def expected_calibration_error(confidences: Sequence[float], correct: Sequence[bool],
                               bins: int = 10) -> float:
    """|accuracy - confidence| averaged over equal-width confidence bins, weighted by size."""
    n = len(confidences)
    total = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        idx = [i for i, c in enumerate(confidences) if lo < c <= hi or (b == 0 and c == 0.0)]
        if idx:
            acc = sum(correct[i] for i in idx) / len(idx)
            conf = sum(confidences[i] for i in idx) / len(idx)
            total += len(idx) / n * abs(acc - conf)
    return total


def brier(probs: Sequence[Sequence[float]], gold_idx: Sequence[int]) -> float:
    """Multi-class Brier score (mean squared error of the probability vectors), in [0, 2]."""
    return sum(sum((p - (j == g)) ** 2 for j, p in enumerate(row))
               for row, g in zip(probs, gold_idx)) / len(gold_idx)


def fit_temperature(scores: Sequence[Sequence[float]], gold_idx: Sequence[int]) -> float:
    """Temperature T minimising the NLL of softmax(scores / T) (golden-section on log T).

    Log-likelihood option scores are often over- or under-confident; dividing by T gives
    calibrated probabilities without changing which option wins.
    """
    def nll(log_t: float) -> float:
        t = math.exp(log_t)
        out = 0.0
        for row, g in zip(scores, gold_idx):
            z = [s / t for s in row]
            m = max(z)
            out += m + math.log(sum(math.exp(v - m) for v in z)) - z[g]
        return out

    a, b = math.log(0.05), math.log(20.0)
    r = (math.sqrt(5) - 1) / 2
    c, d = b - r * (b - a), a + r * (b - a)
    for _ in range(40):
        if nll(c) < nll(d):
            b = d
        else:
            a = c
        c, d = b - r * (b - a), a + r * (b - a)
    return math.exp((a + b) / 2)
