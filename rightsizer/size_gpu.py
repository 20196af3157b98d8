"""GPU sizing per task and the decision record that explains the choice.

The decision record is the payoff the user came for: the chosen deployment (model, rung,
precision, GPU) beside the one-big-model baseline (the largest candidate, zero-shot, bf16),
with quality against the bar, p95 latency, GPU memory and cost per 1M tokens, and why
each smaller option was rejected.
"""

from __future__ import annotations

import json
from pathlib import Path

from rightsizer.atomic import atomic_write_text
from rightsizer.cascade import CascadeResult, priced
from rightsizer.errors import ConfigError, NoFeasibleOption
from rightsizer.models import resolve_model_ref
from rightsizer.precisions import get_precision
from rightsizer.records import DecisionRecord, DecisionSLO, DecisionWorkload, Side
from rightsizer.sizing.engines import serving_engine
from rightsizer.select import Selection
from rightsizer.sizing import SLO as SizingSLO
from rightsizer.sizing import Factors, Recommendation, Traffic, Workload, default_catalog, recommend
from rightsizer.sizing.estimate import held_rate, tail
from rightsizer.sizing.params import load_config
from rightsizer.sizing.traffic import Lengths
from rightsizer.taskspec import TaskSpec


def size_for_task(spec: TaskSpec, config, precision: str, factors=None,
                  price_list: str | None = None, lengths: Lengths | None = None) -> Recommendation:
    """Cheapest GPU option for the task's workload and SLO at the given weight precision.

    ``precision`` is sized as its table entry's ``sizing_name`` says (a CPU-side fp32 choice
    is served in bf16). ``factors``: calibrated efficiency factors
    (``rightsizer.sizing.Factors``); the engine's published defaults when None.
    ``price_list``: the price list (``rightsizer/data/prices/<name>.yaml`` or a path; default
    ``rightsizer.sizing.prices.DEFAULT_PRICE_LIST``); the recommendation names it.
    With a planned request rate (``planned_rate``) the p95 targets are held at that rate, requests
    arriving at random with ``lengths`` (``task_lengths``; the workload's shape when None).
    """
    wl = Workload.of(spec.workload, precision=get_precision(precision).sizing_name)
    lengths = lengths or Lengths.fixed(wl.prompt_tokens, wl.output_tokens, source="typical (task spec workload)")
    rate = planned_rate(spec, lengths)
    return recommend(config, wl, SizingSLO.of(spec.slo), catalog=default_catalog(price_list), precisions=[wl.precision],
                     factors=factors, traffic=Traffic(rate, lengths) if rate else None)


def planned_rate(spec: TaskSpec, lengths: Lengths) -> float | None:
    """The request rate a task is sized for: the spec's ``workload.request_rate``, else the SLO's
    output tokens/s over the mean output length; None without either."""
    if spec.workload.request_rate:
        return float(spec.workload.request_rate)
    tokens_per_s = spec.slo.throughput_tokens_per_s
    return tokens_per_s / lengths.mean(1) if tokens_per_s else None


def _sized(precision: str, rec: Recommendation | None, error: str = "") -> dict:
    """One side's sizing figures (``Side`` fields): its device option, modelled latency,
    throughput and cost, and memory split; "none (<why>)" and NaN without an option."""
    o = rec.chosen if rec else None
    return {"precision": o.precision if o else get_precision(precision).sizing_name,
            "gpu": o.label if o else f"none ({error})",
            "ttft_ms": o.ttft_ms if o else float("nan"), "tpot_ms": o.tpot_ms if o else float("nan"),
            "memory_bytes": o.memory_bytes if o else 0,
            "cost_per_1m_tokens": o.cost_per_1m_output_tokens if o else float("nan"),
            "sizing_mode": o.mode if o else "",
            "price_per_hour": o.price_per_hour if o else float("nan"),
            "throughput_tokens_per_s": o.throughput_tokens_per_s if o else float("nan"),
            "max_throughput_tokens_per_s": o.max_throughput_tokens_per_s if o else float("nan"),
            "replicas": o.replicas if o else 0, **_memory_split(o)}


def measured_with(evaluation: dict) -> dict:
    """Where an evaluate step's figures were measured: its runtime target, in short."""
    t = evaluation.get("target") or {}
    return {"on": t.get("measured_on") or (evaluation.get("latency") or {}).get("device", ""),
            "device": t.get("device", ""), "dtype": t.get("dtype", ""),
            "precision": evaluation.get("precision", ""), "reason": t.get("reason", "")}


def sizing_rules(config) -> str | None:
    """The family whose rules sized ``config`` (``rightsizer.families``), "generic" when none
    covers its ``model_type``, None without a config."""
    if not config:
        return None
    from rightsizer.families import family_of

    cfg = config if isinstance(config, dict) else getattr(config, "to_dict", lambda: {})()
    family = family_of(cfg.get("model_type") or (cfg.get("text_config") or {}).get("model_type"))
    return family.name if family else "generic"


def _memory_split(o) -> dict:
    """The sized option's memory as weights, reserve (runtime, CUDA context) and the rest
    (KV cache and activations), over all its GPUs and replicas: the charts stack these."""
    est = getattr(o, "estimate", None)
    if est is None:
        return {"weights_bytes": 0, "kv_activation_bytes": 0, "reserve_bytes": 0}
    weights = est.weights_bytes * o.replicas
    reserve = est.reserve_bytes * est.count * o.replicas
    return {"weights_bytes": weights, "reserve_bytes": reserve,
            "kv_activation_bytes": max(0, o.memory_bytes - weights - reserve)}


def build_record(spec: TaskSpec, sel: Selection, chosen_eval: dict, baseline_eval: dict,
                 rec_c: Recommendation, baseline_config, precision: str,
                 precision_rows: list[dict] | None = None, factors=None,
                 production: dict | None = None, price_list: str | None = None) -> dict:
    """The decision record of one task: a :class:`~rightsizer.records.DecisionRecord`, as the
    JSON ``save_record`` writes (``DecisionRecord.to_dict``).

    ``rec_c`` is the sizing of the chosen model (``size_for_task``); the baseline (the
    largest candidate in bf16) is sized here, with the same efficiency ``factors``.
    ``production``: the finetune step's summary when the chosen rung is LoRA; the record
    then shows the screening run and the production adapter side by side (``lora``).
    The baseline is priced from the same list as ``rec_c`` (``price_list`` when given); the
    record names it (``price_list``) and keeps each side's model ``config`` (the dict the
    sizing engine reads), so the fleet plan (``rightsizer.plan``) can size both again.
    """
    price_list = price_list or (rec_c.price_list or {}).get("name")
    lengths = task_lengths(spec, chosen_eval)
    try:
        rec_b, err = size_for_task(spec, baseline_config, "bf16", factors=factors, price_list=price_list,
                                   lengths=lengths), ""
    except NoFeasibleOption as e:  # the baseline may itself be unservable: say so, keep going
        rec_b, err = None, str(e)
    largest, largest_params = sel.order[-1]
    baseline_cfg = rec_b.model_config if rec_b else _config_or_none(baseline_config)
    retrieval = sel.chosen.retrieval
    chosen = Side(
        model=sel.chosen.candidate, params=sel.chosen.params, rung=sel.chosen.rung,
        quality=chosen_eval["quality"]["score"], **_sized(precision, rec_c),
        # which prompt format each side was evaluated with (``prompting``: chat or raw)
        prompt_format=chosen_eval.get("prompt_format", sel.chosen.prompt_format),
        # how each side was sized: its family's rules, or "generic" (no family: meta-device count)
        sizing_rules=sizing_rules(rec_c.model_config), config=rec_c.model_config,
        measured_here=chosen_eval["latency"],
        # what each side's quality and latency were measured on (its ``precision`` is the one
        # it is sized and served in): device, dtype, the device's catalog name
        measured_with=measured_with(chosen_eval),
        # every batch size measured, so the report can draw chosen beside baseline
        measured_by_batch=chosen_eval.get("latency_by_batch", []),
        # the retriever beside the metric where the chosen rung retrieved (a retrieval miss is
        # not a model miss), and an extraction's malformed answers
        retrieval_recall_at_k=retrieval.get("recall_at_k") if retrieval else None,
        extraction=chosen_eval["quality"].get("extraction") or {})
    baseline = Side(
        model=largest, params=largest_params, rung="zero_shot", quality=baseline_eval["quality"]["score"],
        **_sized("bf16", rec_b, err), prompt_format=baseline_eval.get("prompt_format", "raw"),
        sizing_rules=sizing_rules(baseline_cfg), config=baseline_cfg, measured_here=baseline_eval["latency"],
        measured_with=measured_with(baseline_eval), measured_by_batch=baseline_eval.get("latency_by_batch", []))
    lora = _lora_section(sel, production)
    traffic = at_planned_rate(spec, lengths, rec_c, rec_b)
    cascade = price_cascade(spec, sel, chosen.cost_per_1m_tokens, factors=factors, price_list=price_list,
                            lengths=lengths)
    retrieval_line = (f"; retrieval recall@{retrieval['k']} {chosen.retrieval_recall_at_k:.3f}"
                      if chosen.retrieval_recall_at_k is not None else "")
    malformed_line = f"; malformed answers {chosen.extraction['malformed']:.1%}" if chosen.extraction else ""
    return DecisionRecord(
        task=spec.name, metric=spec.metric, threshold=spec.threshold, decision_rule=spec.decision_rule,
        chosen=chosen, baseline=baseline, ladder_measured_with=dict(sel.target),
        serving_engine=serving_engine(chosen.sizing_mode, factors or Factors.defaults()),
        slo=DecisionSLO.of(spec.slo), workload=DecisionWorkload.of(spec.workload, lengths.to_dict()),
        traffic=traffic,
        why_not_smaller=sel.rejections(), ladder=[r.to_dict() for r in sel.tried],
        precision_search=precision_rows or [], gpu_options=rec_c.to_rows()[:10],
        price_list=dict(rec_c.price_list), lora=lora, cascade=cascade,
        summary=(f"{spec.name}: {chosen.model} ({chosen.rung}, {chosen.precision}) "
                 f"on {chosen.gpu}: {spec.metric} {chosen.quality:.3f} vs bar "
                 f"{spec.threshold}; ${chosen.cost_per_1m_tokens:.4f}/1M tokens vs "
                 f"${baseline.cost_per_1m_tokens:.4f} for {largest}"
                 + retrieval_line + malformed_line + (f"; {lora['line']}" if lora else "")
                 + (f"; {cascade['line']}" if cascade and cascade.get("line") else ""))).to_dict()


def task_lengths(spec: TaskSpec, evaluation: dict) -> Lengths:
    """The task's request lengths: the spec's ``workload.lengths`` when it gives them, else
    measured by the evaluate step (its ``lengths``: the eval split through the model's
    tokenizer and prompt format), else the spec's typical shape."""
    if spec.workload.lengths:
        return Lengths.from_spec(spec.workload.lengths, spec.name)
    if evaluation.get("lengths"):
        return Lengths.from_dict(evaluation["lengths"], where=f"{spec.name} evaluation lengths")
    return Lengths.fixed(spec.workload.prompt_tokens, spec.workload.output_tokens, source="typical (task spec workload)")


def at_planned_rate(spec: TaskSpec, lengths: Lengths, rec_c: Recommendation,
                    rec_b: Recommendation | None = None) -> dict | None:
    """Mean and p95 TTFT and TPOT of each side's sized option at the planned request rate
    (the spec's ``workload.request_rate``, else the SLO's output tokens/s over the mean output
    length; split over its replicas), requests arriving at random (``sizing.estimate.tail``),
    and the rate one replica holds within the p95 targets. None without either (no planned rate)."""
    rate = planned_rate(spec, lengths)
    if not rate:
        return None
    out: dict = {"request_rate": rate, "lengths_source": lengths.source,
                 "slo": {"ttft_p95_ms": spec.slo.ttft_ms, "tpot_p95_ms": spec.slo.tpot_ms}}
    for side, rec in (("chosen", rec_c), ("baseline", rec_b)):
        o = rec.chosen if rec else None
        if o is None or o.estimate is None or o.estimate.step_model is None:
            out[side] = None
            continue
        per_replica = rate / o.replicas
        fig = tail(o.estimate, per_replica, lengths)
        held = held_rate(o.estimate, spec.slo.ttft_ms, spec.slo.tpot_ms, lengths, start=per_replica)
        out[side] = {"device": o.label, "replicas": o.replicas, "per_replica_rate": per_replica, **fig.to_dict(),
                     "meets_p95": fig.meets(spec.slo.ttft_ms, spec.slo.tpot_ms),
                     "max_rate_per_replica": held}
    return out


def price_cascade(spec: TaskSpec, sel: Selection, big_cost_per_1m: float, factors=None,
                  price_list: str | None = None, lengths: Lengths | None = None) -> dict | None:
    """The ladder's cascade (``Selection.cascade``) at the planned traffic: the kept pair's
    small model sized in bf16 (as the ladder measured it) carries every request, the chosen
    model the deferred share (``cascade.priced``); None when the spec did not ask for one.

    ``pairs``, ``kept`` and ``reason`` are the ladder's; ``small_side`` is the small model's
    sizing; ``chosen`` says the cascade meets the bar and costs less than the chosen model
    alone; ``line`` is the summary's sentence."""
    if not sel.cascade:
        return None
    out = {**sel.cascade, "chosen": False, "line": ""}
    kept = sel.cascade.get("kept")
    if kept is None:
        out["line"] = f"no cascade ({sel.cascade.get('reason') or 'none judged'})"
        return out
    pair = dict(sel.cascade["pairs"][kept])
    try:
        rec_s, err = size_for_task(spec, resolve_model_ref(pair["small"]), "bf16", factors=factors,
                                   price_list=price_list, lengths=lengths), ""
    except NoFeasibleOption as e:
        rec_s, err = None, str(e)
    small_side = {**_sized("bf16", rec_s, err), "model": pair["small"],
                  "config": rec_s.model_config if rec_s else None}  # what the fleet plan sizes again
    result = priced(CascadeResult(**{k: pair[k] for k in CascadeResult.__dataclass_fields__ if k in pair}),
                    small_side["cost_per_1m_tokens"], big_cost_per_1m)
    pair.update(cost_per_1m_tokens=result.cost_per_1m_tokens,
                big_alone_cost_per_1m_tokens=result.big_alone_cost_per_1m_tokens,
                cheaper=result.cheaper, chosen=result.chosen)
    out["pairs"] = [pair if i == kept else p for i, p in enumerate(sel.cascade["pairs"])]
    verdict = "chosen" if result.chosen else ("not cheaper" if result.meets_bar else "misses the bar")
    out.update(chosen=result.chosen, small_side=small_side,
               line=(f"cascade {pair['small']} -> {pair['big']}: defers {result.deferral_rate:.1%} below "
                     f"confidence {result.threshold:.3f}, {spec.metric} {result.quality:.3f} on the confirm half, "
                     f"${result.cost_per_1m_tokens:.4f}/1M tokens vs ${big_cost_per_1m:.4f} alone ({verdict})"))
    return out


def _config_or_none(config) -> dict | None:
    try:
        return load_config(config)
    except ConfigError:  # the baseline's config is optional in the record
        return None


_FIGURES = ("steps", "epochs", "examples", "rank", "learning_rate", "global_batch", "max_seq_len",
            "final_loss", "tokens_per_second", "train_seconds", "strategy", "world_size",
            "resumed_from")


def _lora_section(sel: Selection, production: dict | None) -> dict | None:
    """A LoRA choice's two runs: the ladder's screening run and the production adapter
    (None when the chosen rung is not LoRA)."""
    c = sel.chosen
    if c is None or c.rung != "lora":
        return None
    screening = {"score": c.score, "eval_examples": c.n,
                 **{k: c.training.get(k) for k in _FIGURES}}
    prod = None
    if production:
        prod = {"score": production["score"], "ci_low": production.get("ci_low"),
                "ci_high": production.get("ci_high"),
                "eval_examples": production.get("eval_examples"),
                **{k: production.get(k) for k in _FIGURES}}
    line = f"LoRA screening {sel.metric} {c.score:.3f}"
    if prod:
        tps = prod["tokens_per_second"]
        loss = prod["final_loss"]
        line += (f", production adapter {prod['score']:.3f} ({prod['steps']} steps, "
                 f"{prod['strategy']} x {prod['world_size']}"
                 + (f", {tps:,.0f} tokens/s" if tps else "")
                 + (f", final loss {loss:.3f}" if loss is not None else "") + ")")
    else:
        line += " (served as screened: no production adapter)"
    return {"screening": screening, "production": prod, "line": line}


def save_record(record: dict, path: str | Path) -> None:
    """Write ``record`` (a decision record's JSON, or the report's ``decisions.json``) at ``path``."""
    atomic_write_text(path, json.dumps(record, indent=2, sort_keys=True, default=str))


def load_record(path: str | Path) -> dict:
    """The JSON at ``path`` as written; readers take it through ``DecisionRecord.from_dict``."""
    return json.loads(Path(path).read_text())
