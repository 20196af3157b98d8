"""Re-evaluation: a deployed task model against fresh data, compared with its registration."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from rightsizer.bundle import read_bundle, read_cascade
from rightsizer.errors import ConfigError
from rightsizer.monitor import Judge, Shadow
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
        c.pop("answers")  # the report keeps the rates, not every answer
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
    from the one the ladder measured (the traffic the plan gave each model no longer holds).
    ``answers``: the cascade's answers as served (each model's own text)."""
    from rightsizer import metrics, tasktypes
    from rightsizer.bundle import CASCADE_DIR
    from rightsizer.cascade import mix
    from rightsizer.evaluate import load_rows
    from rightsizer.inference import load_bundle, predict

    rows = load_rows(spec, split, spec.max_eval_examples)
    tt = tasktypes.get(spec.type)
    raw_gold = [r[spec.label_field] for r in rows]
    answers, raw, confidence = {}, {}, None
    for side, path in (("small", Path(bundle_dir) / CASCADE_DIR), ("big", Path(bundle_dir))):
        b = load_bundle(path, device=None)
        pred = predict(b.model, b.tokenizer, b.spec, rows, b.shots or None, confidence=side == "small")
        raw[side] = [str(a) for a in pred.answers]
        gold, answers[side] = tt.scoring_inputs(b.spec, raw_gold, pred.answers)
        if side == "small":
            confidence = tt.confidence(b.spec, pred)
    if confidence is None:
        raise ConfigError(f"{bundle_dir}: the cascade's small model gives no confidence for a {spec.type} task")
    mixed, deferred = mix(answers["small"], answers["big"], confidence, float(pair["threshold"]))
    served, _ = mix(raw["small"], raw["big"], confidence, float(pair["threshold"]))
    rate = sum(deferred) / len(deferred)
    registered = float(pair["deferral_rate"])
    return {"small": pair.get("small"), "big": pair.get("big"), "threshold": pair["threshold"],
            "registered_deferral_rate": registered, "fresh_deferral_rate": rate,
            "deferral_change": rate - registered, "deferral_tolerance": spec.deferral_tolerance,
            "deferral_regression": abs(rate - registered) > spec.deferral_tolerance,
            "registered_quality": pair.get("quality"),
            "fresh_quality": metrics.compute(spec.metric, gold, mixed, list(spec.labels)),
            "fresh_examples": len(rows), "answers": served}


@dataclasses.dataclass
class LabelFree:
    """What a served-traffic check holds served answers to, besides the eval split
    (``rightsizer.monitor.served_report``'s keyword arguments, ``kwargs``)."""

    shadow: Shadow | None = None
    reference_agreement: float | None = None
    shadow_model: str | None = None
    judge: Judge | None = None
    reference_judged: float | None = None
    evaluated_deferral: float | None = None

    def kwargs(self) -> dict:
        return {"shadow": self.shadow, "reference_agreement": self.reference_agreement, "judge": self.judge,
                "reference_judged": self.reference_judged, "evaluated_deferral": self.evaluated_deferral}


def label_free_checks(spec: TaskSpec, run_dir: str | Path, shadow: bool = True, judge: bool = True,
                      reference: list[dict] | None = None) -> LabelFree:
    """The label-free references of ``spec``'s deployment by the ``size_and_deploy`` run at
    ``run_dir`` (what the served-source re-evaluation and the monitoring application both use):

    - a cascade's evaluated deferral rate (its bundle);
    - ``shadow``: the run's baseline model, loaded to answer served inputs, and the agreement the
      deployed answers had with it on the eval split: the chosen model's evaluated answers, or for
      a cascade the cascade's own answers (the small model answers most requests);
    - ``judge`` (when the spec names a judge model): the judge, and its verdict share on the
      deployed answers to the eval split.

    ``reference``: the eval split's rows when the caller has read them already.
    """
    import json

    from rightsizer.evaluate import load_rows
    from rightsizer.inference import load_model, predict
    from rightsizer.judge import judged_right, load_judge
    from rightsizer.layout import RunLayout
    from rightsizer.models import resolve_model_ref
    from rightsizer.monitor import agreement
    from rightsizer.runtime.target import resolve_target

    layout = RunLayout(Path(run_dir))
    bundle = layout.bundle_dir(spec.name)
    pair = read_cascade(bundle) if bundle.is_dir() else None
    out = LabelFree(evaluated_deferral=float(pair["deferral_rate"]) if pair else None)
    if not (shadow or (judge and spec.judge)):
        return out
    evals = [layout.evaluation_file(spec.name, label) for label in ("chosen", "baseline")]
    decision = layout.decision_file(spec.name)
    missing = [str(p) for p in (*evals, decision) if not p.is_file()]
    if missing:
        raise ConfigError(f"{spec.name}: the shadow and judge checks need the run's evaluate and size_gpu outputs; "
                          f"missing {', '.join(missing)} (or pass shadow=False)")
    chosen, base = ([str(a) for a in json.loads(p.read_text())["predictions"]] for p in evals)
    if reference is None:
        reference = load_rows(spec, spec.eval_split, spec.max_eval_examples)
    if len(chosen) != len(reference):
        raise ConfigError(f"{evals[0]}: {len(chosen)} answers for an eval split of {len(reference)} rows; "
                          "expected the run's evaluation of this spec's eval split")
    deployed = (reevaluate_cascade(spec, bundle, spec.eval_split, pair)["answers"] if pair else chosen)
    target = resolve_target()
    if shadow:
        out.reference_agreement = agreement(deployed, base)
        out.shadow_model = json.loads(decision.read_text())["baseline"]["model"]
        model, tok = load_model(resolve_model_ref(out.shadow_model), trust_remote_code=spec.trust_remote_code,
                                target=target)

        def shadow_fn(texts: list[str]) -> list[str]:
            return [str(a) for a in predict(model, tok, spec, [{spec.input_field: t} for t in texts]).answers]
        out.shadow = shadow_fn
    if judge and spec.judge:
        out.judge = load_judge(spec, target=target)
        out.reference_judged = judged_right(out.judge, [str(r[spec.input_field]) for r in reference], deployed)
    return out


def reevaluate_served(spec: TaskSpec, run_dir: str | Path, traffic_log: str | Path, window_s: float = 3600.0,
                      shadow: bool = True, judge: bool = True) -> dict:
    """The task's served traffic (``traffic_log``, ``scripts/serve.sh --traffic-log``) against its
    eval split, without labels (``rightsizer.monitor.served_report``), for the deployment of the
    ``size_and_deploy`` run at ``run_dir``, with the references of ``label_free_checks``."""
    from rightsizer.evaluate import load_rows
    from rightsizer.monitor import served_report
    from rightsizer.serving.traffic_log import read_traffic

    traffic = list(read_traffic(traffic_log))
    if not any(r.get("task") == spec.name for r in traffic):  # served nothing of this task: nothing to flag
        seen = sorted({str(r.get("task")) for r in traffic})
        return {"task": spec.name, "source": "served", "requests": 0, "windows": [], "flags": [], "regression": False,
                "action": f"none: no served traffic for task {spec.name} in {traffic_log} (it holds {', '.join(seen)})"}
    reference = load_rows(spec, spec.eval_split, spec.max_eval_examples)
    checks = label_free_checks(spec, run_dir, shadow=shadow, judge=judge, reference=reference)
    out = served_report(spec, traffic, reference, window_s=window_s, **checks.kwargs())
    out["shadow_model"] = checks.shadow_model
    out["judge_model"] = spec.judge if checks.judge is not None else None
    return out
