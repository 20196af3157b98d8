"""Re-evaluation: a deployed task model against fresh data, compared with its registration."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from rightsizer.bundle import read_bundle, read_cascade
from rightsizer.errors import ConfigError
from rightsizer.evaluate import evaluate_model
from rightsizer.taskspec import TaskSpec


def with_fresh_data(spec: TaskSpec, fresh: str) -> tuple[TaskSpec, str]:
    """The spec and split name to evaluate: ``fresh`` is a split of the spec or a data file."""
    if fresh in spec.dataset:
        return spec, fresh
    if Path(fresh).exists():
        return dataclasses.replace(spec, dataset={**spec.dataset, "fresh": str(fresh)}), "fresh"
    raise ConfigError(f"fresh_split: {fresh!r} is neither a split of the task "
                      f"({sorted(spec.dataset)}) nor an existing data file", spec.name)


def reevaluate_bundle(spec: TaskSpec, bundle_dir: str, fresh: str, progress: bool = True) -> dict:
    """Score the bundle on fresh data; flag a drop beyond ``spec.quality_tolerance``."""
    meta = read_bundle(bundle_dir)
    registered = meta.get("metrics", {}).get(spec.metric)
    if registered is None:
        raise ConfigError(f"{bundle_dir}: no registered {spec.metric} to compare with")
    spec2, split = with_fresh_data(spec, fresh)
    report = evaluate_model(spec2, bundle_dir, split=split, repeats=2, progress=progress)
    score = report["quality"]["score"]
    drop = registered - score
    regression = drop > spec.quality_tolerance
    action = (f"re-run size_and_deploy for task {spec.name} (fresh {spec.metric} {score:.3f} vs "
              f"registered {registered:.3f}, tolerance {spec.quality_tolerance})"
              if regression else "none")
    out = {"task": spec.name, "metric": spec.metric, "registered_score": registered,
           "fresh_score": score, "drop": drop, "tolerance": spec.quality_tolerance,
           "regression": regression, "below_threshold": score < spec.threshold,
           "action": action, "fresh_examples": report["quality"]["n"],
           "latency": report["latency"]}
    pair = read_cascade(bundle_dir)
    if pair is not None:  # the bundle carries a cascade: its deferral rate is watched too
        out["cascade"] = c = reevaluate_cascade(spec2, bundle_dir, split, pair)
        if c["deferral_regression"]:
            out["regression"] = True
            why = (f"re-run size_and_deploy for task {spec.name} (the cascade's deferral rate on fresh data "
                   f"{c['fresh_deferral_rate']:.3f} vs {c['registered_deferral_rate']:.3f} evaluated, tolerance "
                   f"{spec.deferral_tolerance})")
            out["action"] = why if action == "none" else f"{action}; {why}"
    return out


def reevaluate_cascade(spec: TaskSpec, bundle_dir: str | Path, split: str, pair: dict) -> dict:
    """The bundle's cascade (``bundle.add_cascade``) on ``split``, as it is served: the small
    model's answers where its confidence is at or above the threshold, the chosen model's
    elsewhere. The deferral rate is flagged when it moved by more than ``spec.deferral_tolerance``
    from the one the ladder measured (the traffic the plan gave each model no longer holds)."""
    from rightsizer import metrics, tasktypes
    from rightsizer.bundle import CASCADE_DIR
    from rightsizer.cascade import mix
    from rightsizer.evaluate import load_rows
    from rightsizer.inference import load_bundle, predict

    rows = load_rows(spec, split, spec.max_eval_examples)
    tt = tasktypes.get(spec.type)
    raw_gold = [r[spec.label_field] for r in rows]
    answers, confidence = {}, None
    for side, path in (("small", Path(bundle_dir) / CASCADE_DIR), ("big", Path(bundle_dir))):
        b = load_bundle(path, device=None)
        pred = predict(b.model, b.tokenizer, b.spec, rows, b.shots or None, confidence=side == "small")
        gold, answers[side] = tt.scoring_inputs(b.spec, raw_gold, pred.answers)
        if side == "small":
            confidence = tt.confidence(b.spec, pred)
    if confidence is None:
        raise ConfigError(f"{bundle_dir}: the cascade's small model gives no confidence for a {spec.type} task")
    mixed, deferred = mix(answers["small"], answers["big"], confidence, float(pair["threshold"]))
    rate = sum(deferred) / len(deferred)
    registered = float(pair["deferral_rate"])
    return {"small": pair.get("small"), "big": pair.get("big"), "threshold": pair["threshold"],
            "registered_deferral_rate": registered, "fresh_deferral_rate": rate,
            "deferral_change": rate - registered, "deferral_tolerance": spec.deferral_tolerance,
            "deferral_regression": abs(rate - registered) > spec.deferral_tolerance,
            "registered_quality": pair.get("quality"),
            "fresh_quality": metrics.compute(spec.metric, gold, mixed, list(spec.labels)),
            "fresh_examples": len(rows)}


def reevaluate_served(spec: TaskSpec, run_dir: str | Path, traffic_log: str | Path, window_s: float = 3600.0,
                      shadow: bool = True) -> dict:
    """The task's served traffic (``traffic_log``, ``scripts/serve.sh --traffic-log``) against its
    eval split, without labels (``rightsizer.monitor.served_report``), for the deployment of the
    ``size_and_deploy`` run at ``run_dir``: a cascade's evaluated deferral rate from its bundle,
    and, with ``shadow``, the run's baseline model answering the served inputs, held to the
    agreement the chosen and the baseline model had on the eval split (their evaluate steps'
    answers)."""
    import json

    from rightsizer.evaluate import load_rows
    from rightsizer.inference import load_model, predict
    from rightsizer.layout import RunLayout
    from rightsizer.models import resolve_model_ref
    from rightsizer.monitor import agreement, served_report
    from rightsizer.runtime.target import resolve_target
    from rightsizer.serving.traffic_log import read_traffic

    layout = RunLayout(Path(run_dir))
    traffic = list(read_traffic(traffic_log))
    if not any(r.get("task") == spec.name for r in traffic):  # served nothing of this task: nothing to flag
        seen = sorted({str(r.get("task")) for r in traffic})
        return {"task": spec.name, "source": "served", "requests": 0, "windows": [], "flags": [], "regression": False,
                "action": f"none: no served traffic for task {spec.name} in {traffic_log} (it holds {', '.join(seen)})"}
    reference = load_rows(spec, spec.eval_split, spec.max_eval_examples)
    bundle = layout.bundle_dir(spec.name)
    pair = read_cascade(bundle) if bundle.is_dir() else None
    evaluated_deferral = float(pair["deferral_rate"]) if pair else None
    shadow_fn, ref_agree, baseline_ref = None, None, None
    if shadow:
        evals = [layout.evaluation_file(spec.name, label) for label in ("chosen", "baseline")]
        decision = layout.decision_file(spec.name)
        missing = [str(p) for p in (*evals, decision) if not p.is_file()]
        if missing:
            raise ConfigError(f"{spec.name}: the shadow check needs the run's evaluate and size_gpu outputs; "
                              f"missing {', '.join(missing)} (or pass shadow=False)")
        chosen, base = (json.loads(p.read_text())["predictions"] for p in evals)
        ref_agree = agreement([str(a) for a in chosen], [str(a) for a in base])
        baseline_ref = json.loads(decision.read_text())["baseline"]["model"]
        model, tok = load_model(resolve_model_ref(baseline_ref), trust_remote_code=spec.trust_remote_code,
                                target=resolve_target())

        def shadow_fn(texts: list[str]) -> list[str]:
            preds = predict(model, tok, spec, [{spec.input_field: t} for t in texts])
            return [str(a) for a in preds.answers]
    out = served_report(spec, traffic, reference, window_s=window_s, shadow=shadow_fn, reference_agreement=ref_agree,
                        evaluated_deferral=evaluated_deferral)
    out["shadow_model"] = baseline_ref
    return out
