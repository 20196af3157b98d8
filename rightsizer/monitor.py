"""What is served, watched without labels: drift, latency and agreement per time window.

Reads the served-traffic record (``rightsizer.serving.traffic_log``) of one task and compares
each window of it with the task's eval split, the data the model was chosen on:

- **input drift**: the served inputs' lengths (words) against the eval split's, the two-sample
  Kolmogorov-Smirnov test (``scipy.stats.ks_2samp``): flagged when its statistic passes
  ``LENGTH_DRIFT`` and its p-value is under ``P_VALUE``;
- **answer mix** (classification): the share of each label served against the eval split's gold
  labels, total variation distance, flagged past ``MIX_DRIFT``;
- **latency**: the p95 of the served end-to-end latency against the task's SLO budget
  (TTFT + TPOT x the answers' mean tokens);
- **agreement** (when a shadow model answers the same inputs, e.g. the one-big-model baseline):
  the share of answers that agree, flagged when it falls more than the task's
  ``quality_tolerance`` below the agreement the two had on the eval split;
- **judged right** (when the task spec names a judge model, ``rightsizer.judge``): the share of
  served answers the judge calls right, flagged when it falls more than ``quality_tolerance``
  below the judge's share on the chosen model's answers to the eval split;
- a cascade's **deferral share**, against its evaluated rate and ``deferral_tolerance``.

No labels are needed: these figures say when to look (and re-run ``size_and_deploy``), the
labelled re-evaluation says by how much the quality moved.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Callable, Iterable

import numpy as np

from rightsizer.errors import ConfigError
from rightsizer.taskspec import TaskSpec

LENGTH_DRIFT = 0.25  # KS statistic (largest gap between the two length distributions)
P_VALUE = 0.01
MIX_DRIFT = 0.25  # total variation distance between the served and the eval split's labels
WINDOW_S = 3600.0

Shadow = Callable[[list[str]], list[str]]  # inputs -> another model's answers
Judge = Callable[[list[str], list[str]], list[bool]]  # (inputs, answers) -> judged right


def _words(text: Any) -> int:
    return len(str(text).split())


def _tvd(a: Counter, b: Counter) -> float:
    na, nb = sum(a.values()), sum(b.values())
    keys = set(a) | set(b)
    return 0.5 * sum(abs(a[k] / na - b[k] / nb) for k in keys) if na and nb else math.nan


def _agree(a: str, b: str) -> bool:
    return " ".join(str(a).split()).lower() == " ".join(str(b).split()).lower()


def agreement(answers: list[str], other: list[str]) -> float:
    """Share of answers the other model gives too (whitespace and case aside)."""
    if len(answers) != len(other) or not answers:
        raise ConfigError(f"agreement: {len(answers)} answers against {len(other)}; expected as many, > 0")
    return sum(_agree(a, b) for a, b in zip(answers, other)) / len(answers)


def served_report(spec: TaskSpec, traffic: Iterable[dict], reference_rows: list[dict], *, window_s: float = WINDOW_S,
                  shadow: Shadow | None = None, reference_agreement: float | None = None,
                  evaluated_deferral: float | None = None, judge: Judge | None = None,
                  reference_judged: float | None = None) -> dict[str, Any]:
    """Per window of ``window_s`` seconds of ``spec``'s served traffic: the figures above and
    their flags; ``regression`` when the latest window has a flag, with the action to take.
    ``reference_rows``: the eval split (inputs, gold labels). A ConfigError naming the task
    when the record holds none of its traffic."""
    from scipy.stats import ks_2samp

    if not (window_s > 0):
        raise ConfigError(f"window_s: {window_s}; expected seconds > 0")
    all_rows = list(traffic)
    rows = sorted((r for r in all_rows if r.get("task") == spec.name), key=lambda r: r.get("ts", 0))
    if not rows:
        seen = sorted({str(r.get("task")) for r in all_rows})
        raise ConfigError(f"no served traffic for task {spec.name!r} in the record (it holds {', '.join(seen) or 'none'})")
    if not reference_rows:
        raise ConfigError(f"{spec.name}: an empty eval split to compare the served traffic with")
    ref_lengths = [_words(r[spec.input_field]) for r in reference_rows]
    labels = spec.type == "classification"
    ref_mix = Counter(str(r[spec.label_field]) for r in reference_rows) if labels else Counter()
    t0 = float(rows[0].get("ts", 0.0))
    windows: dict[int, list[dict]] = defaultdict(list)
    for r in rows:
        windows[int((float(r.get("ts", t0)) - t0) // window_s)].append(r)
    out_windows = []
    for w in sorted(windows):
        ws = windows[w]
        lengths = [_words(r["input"]) for r in ws]
        ks = ks_2samp(lengths, ref_lengths)
        mix = _tvd(Counter(str(r["answer"]) for r in ws), ref_mix) if labels else None
        latency = [float(r["latency_ms"]) for r in ws]
        tokens = [r.get("completion_tokens") or 1 for r in ws]
        budget = spec.slo.ttft_ms + spec.slo.tpot_ms * max(0.0, float(np.mean(tokens)) - 1)
        p95 = float(np.percentile(latency, 95))
        row: dict[str, Any] = {
            "window": w, "start": t0 + w * window_s, "requests": len(ws),
            "input_words_mean": float(np.mean(lengths)), "eval_input_words_mean": float(np.mean(ref_lengths)),
            "length_drift": float(ks.statistic), "length_p_value": float(ks.pvalue),
            "length_drift_flag": bool(ks.statistic > LENGTH_DRIFT and ks.pvalue < P_VALUE),
            "answer_mix_drift": mix, "answer_mix_flag": bool(mix is not None and mix > MIX_DRIFT),
            "latency_p95_ms": p95, "latency_budget_ms": budget, "latency_flag": p95 > budget}
        deferred = [r["deferred"] for r in ws if r.get("deferred") is not None]
        if deferred:
            share = sum(deferred) / len(deferred)
            row["deferral_share"] = share
            row["deferral_flag"] = (evaluated_deferral is not None
                                    and abs(share - evaluated_deferral) > spec.deferral_tolerance)
        inputs, answers = [str(r["input"]) for r in ws], [str(r["answer"]) for r in ws]
        if shadow is not None:
            agree = agreement(answers, shadow(inputs))
            row["agreement"] = agree
            row["agreement_flag"] = (reference_agreement is not None
                                     and agree < reference_agreement - spec.quality_tolerance)
        if judge is not None:
            verdicts = judge(inputs, answers)
            row["judged_right"] = sum(verdicts) / len(verdicts)
            row["judge_flag"] = (reference_judged is not None
                                 and row["judged_right"] < reference_judged - spec.quality_tolerance)
        out_windows.append(row)
    last = out_windows[-1]
    flags = [k[:-5] for k, v in last.items() if k.endswith("_flag") and v]
    refs = {"agreement": reference_agreement, "deferral": evaluated_deferral, "judge": reference_judged}
    action = (f"re-run size_and_deploy for task {spec.name} (served traffic, latest window: "
              + ", ".join(_why(k, last, refs) for k in flags) + ")" if flags else "none")
    return {"task": spec.name, "source": "served", "requests": len(rows), "windows": out_windows,
            "window_s": window_s, "flags": flags, "regression": bool(flags), "action": action,
            "reference_agreement": reference_agreement, "evaluated_deferral_rate": evaluated_deferral,
            "reference_judged_right": reference_judged}


def _why(flag: str, w: dict, refs: dict[str, float | None]) -> str:
    if flag == "length_drift":
        return (f"input lengths drifted: {w['input_words_mean']:.1f} words on average against "
                f"{w['eval_input_words_mean']:.1f} in the eval split, KS {w['length_drift']:.2f}")
    if flag == "answer_mix":
        return f"answer mix drifted: total variation {w['answer_mix_drift']:.2f} from the eval split's labels"
    if flag == "latency":
        return f"p95 latency {w['latency_p95_ms']:.0f} ms over the SLO budget {w['latency_budget_ms']:.0f} ms"
    if flag == "deferral":
        return f"deferral share {w['deferral_share']:.2f} against {refs['deferral']:.2f} evaluated"
    if flag == "judge":
        return f"the judge calls {w['judged_right']:.2f} of the answers right against {refs['judge']:.2f} on the eval split"
    return f"agreement with the shadow model {w['agreement']:.2f} against {refs['agreement']:.2f} on the eval split"


def served_figure(report: dict):
    """Agreement, drift and p95 latency against its budget over the windows (Plotly)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    ws = report["windows"]
    x = [w["window"] for w in ws]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("drift and agreement", "p95 latency vs the SLO budget"))
    fig.add_trace(go.Scatter(x=x, y=[w["length_drift"] for w in ws], name="input length drift (KS)"), 1, 1)
    if any(w.get("answer_mix_drift") is not None for w in ws):
        fig.add_trace(go.Scatter(x=x, y=[w["answer_mix_drift"] for w in ws], name="answer mix drift (TVD)"), 1, 1)
    if any("agreement" in w for w in ws):
        fig.add_trace(go.Scatter(x=x, y=[w.get("agreement") for w in ws], name="agreement with the shadow"), 1, 1)
    if any("judged_right" in w for w in ws):
        fig.add_trace(go.Scatter(x=x, y=[w.get("judged_right") for w in ws], name="judged right"), 1, 1)
    fig.add_hline(y=LENGTH_DRIFT, line_dash="dot", row=1, col=1)
    fig.add_trace(go.Scatter(x=x, y=[w["latency_p95_ms"] for w in ws], name="p95 latency (ms)"), 1, 2)
    fig.add_trace(go.Scatter(x=x, y=[w["latency_budget_ms"] for w in ws], name="SLO budget (ms)",
                             line={"dash": "dash"}), 1, 2)
    fig.update_layout(title=f"{report['task']}: served traffic per {report['window_s']:.0f}-second window",
                      xaxis_title="window", xaxis2_title="window")
    return fig


__all__ = ["served_report", "served_figure", "agreement", "Judge", "Shadow", "LENGTH_DRIFT", "MIX_DRIFT", "P_VALUE", "WINDOW_S"]
