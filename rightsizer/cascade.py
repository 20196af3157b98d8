"""A confidence cascade: the small model answers when it is sure, the bigger one when it is not.

FrugalGPT, RouteLLM and AutoMix defer a query from a cheap model to a dearer one when the
cheap model's confidence is low. Here the pair is one task's smaller candidate (which fails
the bar alone) and a bigger one (which passes); each eval example has both models' answers
and the small model's confidence. The deferral threshold is chosen on one half of the eval
split (the *calibration* half: the lowest deferral rate whose quality clears the bar and
stays within the task's quality tolerance of the big model's there) and judged on the other (the *confirm* half: quality with its bootstrap CI, the deferral rate),
so the quality reported is not the one the threshold was tuned on.

The threshold sits halfway between two neighbouring confidences of the calibration half,
never on one: a confidence computed on another CPU differs in its last bits, and a threshold
equal to a confidence would flip that example's side (the any-CPU rule).

Cost: the small model serves every request, the big one the deferred share; the cascade is
chosen only when it meets the bar on the confirm half and costs less than the big model alone.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Sequence

from rightsizer import metrics
from rightsizer.errors import ConfigError

MIN_EXAMPLES = 20  # below this an eval split cannot be halved into a choice and a check


@dataclass
class CascadeResult:
    """A cascade judged on the confirm half of the eval split."""

    small: str
    big: str
    metric: str
    threshold: float | None  # defer when the small model's confidence is below it (None: no threshold clears the bar)
    deferral_rate: float  # share of the confirm half sent to the big model
    quality: float  # the cascade's metric on the confirm half
    ci_low: float
    ci_high: float
    small_quality_kept: float | None  # the small model on the examples it kept
    big_quality_deferred: float | None  # the big model on the examples deferred to it
    calibration_quality: float | None  # on the half the threshold was chosen on
    calibration_deferral_rate: float | None
    n_calibration: int
    n_confirm: int
    meets_bar: bool
    cost_per_1m_tokens: float | None = None  # small for all + big for the deferred share
    big_alone_cost_per_1m_tokens: float | None = None
    cheaper: bool | None = None
    chosen: bool = False
    calibration_target: float | None = None  # the quality the threshold had to reach there (judge's tolerance)
    # every candidate threshold on the calibration half: {threshold, deferral_rate, quality}
    # (what the select step's cascade chart draws; the choice is the first to clear the bar)
    curve: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def split_halves(n: int, seed: int = 0) -> tuple[list[int], list[int]]:
    """The eval split's examples as two halves (seeded shuffle): the threshold is chosen on
    the first and confirmed on the second."""
    if n < MIN_EXAMPLES:
        raise ConfigError(f"a cascade needs at least {MIN_EXAMPLES} eval examples to choose and confirm "
                          f"a threshold; this split has {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    half = n // 2
    return sorted(order[:half]), sorted(order[half:])


def mix(small: Sequence[str], big: Sequence[str], confidence: Sequence[float],
        threshold: float) -> tuple[list[str], list[bool]]:
    """The cascade's answers: the small model's where its confidence is at or above
    ``threshold``, the big model's elsewhere; and which were deferred."""
    deferred = [c < threshold for c in confidence]
    return [b if d else s for s, b, d in zip(small, big, deferred)], deferred


def candidate_thresholds(confidence: Sequence[float]) -> list[float]:
    """Thresholds between neighbouring distinct confidences, from deferring nothing to
    deferring everything, ascending (more deferral as it grows)."""
    values = sorted(set(confidence))
    if not values:
        return []
    mids = [(a + b) / 2 for a, b in zip(values, values[1:])]
    return [values[0] - 1.0, *mids, values[-1] + 1.0]


def calibration_curve(gold: Sequence, small: Sequence[str], big: Sequence[str], confidence: Sequence[float],
                      metric: str, labels: Sequence[str]) -> list[dict]:
    """The cascade at every candidate threshold, ascending: its deferral rate and quality."""
    out = []
    for t in candidate_thresholds(confidence):
        answers, deferred = mix(small, big, confidence, t)
        out.append({"threshold": t, "deferral_rate": sum(deferred) / len(deferred),
                    "quality": metrics.compute(metric, list(gold), answers, list(labels))})
    return out


def choose_threshold(gold: Sequence, small: Sequence[str], big: Sequence[str], confidence: Sequence[float],
                     metric: str, labels: Sequence[str], bar: float,
                     curve: list[dict] | None = None) -> tuple[float | None, float, float]:
    """The threshold with the lowest deferral rate whose cascade quality on these examples
    is at least ``bar``: ``(threshold, quality, deferral rate)``; ``(None, best quality,
    1.0)`` when none reaches it. ``curve``: these examples' ``calibration_curve``, if known."""
    curve = curve if curve is not None else calibration_curve(gold, small, big, confidence, metric, labels)
    for point in curve:
        if point["quality"] >= bar:
            return point["threshold"], point["quality"], point["deferral_rate"]
    return None, max((p["quality"] for p in curve), default=float("-inf")), 1.0


def judge(small_name: str, big_name: str, gold: Sequence, small: Sequence[str], big: Sequence[str],
          confidence: Sequence[float], metric: str, labels: Sequence[str], bar: float,
          decision_rule: str = "ci_lower", seed: int = 0, n_boot: int = 500, alpha: float = 0.05,
          tolerance: float | None = None) -> CascadeResult:
    """Choose the threshold on one half of the eval examples and judge the cascade on the other.

    ``gold``, ``small``, ``big``, ``confidence``: per eval example, the gold answer, each
    model's answer and the small model's confidence. ``decision_rule``: the task's (the CI's
    lower end must clear the bar, or the score). ``tolerance``: the threshold must keep the
    big model's quality on the calibration half within it (never below the bar), as a
    quantized model must keep the unquantized one's: the lowest deferral that only just
    clears the bar there would clear it on the confirm half about half the time; None: the bar
    alone."""
    n = len(gold)
    if not (len(small) == len(big) == len(confidence) == n):
        raise ValueError("gold, small, big and confidence must be per eval example, of one length")
    calib, confirm = split_halves(n, seed)

    def pick(idx: list[int], seq: Sequence) -> list:
        return [seq[i] for i in idx]

    cal = [pick(calib, x) for x in (gold, small, big, confidence)]
    curve = calibration_curve(*cal, metric, labels)
    target = bar
    if tolerance is not None:
        target = max(bar, metrics.compute(metric, cal[0], cal[2], list(labels)) - tolerance)
    t, q_cal, rate_cal = choose_threshold(*cal, metric, labels, target, curve=curve)
    g2, s2, b2, c2 = (pick(confirm, x) for x in (gold, small, big, confidence))
    if t is None:
        answers, deferred = list(b2), [True] * len(b2)
    else:
        answers, deferred = mix(s2, b2, c2, t)
    quality = metrics.compute(metric, g2, answers, list(labels))
    lo, hi = metrics.bootstrap_ci(g2, answers, list(labels), metric, n_boot=n_boot, alpha=alpha, seed=seed)
    kept = [i for i, d in enumerate(deferred) if not d]
    sent = [i for i, d in enumerate(deferred) if d]
    small_kept = metrics.compute(metric, pick(kept, g2), pick(kept, s2), list(labels)) if kept else None
    big_sent = metrics.compute(metric, pick(sent, g2), pick(sent, b2), list(labels)) if sent else None
    score = lo if decision_rule == "ci_lower" else quality
    return CascadeResult(
        small=small_name, big=big_name, metric=metric, threshold=t, deferral_rate=len(sent) / len(deferred),
        quality=quality, ci_low=lo, ci_high=hi, small_quality_kept=small_kept, big_quality_deferred=big_sent,
        calibration_quality=q_cal if t is not None else None,
        calibration_deferral_rate=rate_cal if t is not None else None,
        n_calibration=len(calib), n_confirm=len(confirm), meets_bar=t is not None and score >= bar,
        curve=curve, calibration_target=target)


def priced(result: CascadeResult, small_cost_per_1m: float, big_cost_per_1m: float) -> CascadeResult:
    """The cascade's cost at the planned traffic: the small model carries every request, the
    big one the deferred share; chosen when it meets the bar and costs less than the big alone."""
    cost = small_cost_per_1m + result.deferral_rate * big_cost_per_1m
    result.cost_per_1m_tokens = cost
    result.big_alone_cost_per_1m_tokens = big_cost_per_1m
    result.cheaper = cost < big_cost_per_1m
    result.chosen = bool(result.meets_bar and result.cheaper)
    return result
