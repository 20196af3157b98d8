"""The model-selection ladder: the smallest candidate and the cheapest rung that pass.

Candidates are ordered by parameter count computed from their configs (never by name).
Candidates that cannot meet the task's SLO on any catalog GPU (sizing engine) are dropped
before any evaluation, with the reason. For each remaining candidate, smallest first, the
rungs are tried in order of cost (zero-shot, few-shot, retrieval for a task with a
knowledge source, LoRA fine-tune); the first rung that clears the task's bar wins. The
retrieval rung (and the LoRA rung of such a task) runs with the spec ``retrieval.for_rung``
gives, whose prompts carry the top-k passages; its results record the retriever's
recall@k where eval rows name their gold passage. Each rung is screened (``rightsizer.screening``): it is
scored on a small part of the eval split first and stopped as soon as it can no longer
pass, so the cost grows with the position of the passing candidate. Every rung tried is
recorded, so the decision record can say why each smaller option was rejected.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


from rightsizer import tasktypes
from rightsizer.atomic import atomic_dir, atomic_write_text
from rightsizer.cascade import MIN_EXAMPLES, judge
from rightsizer.errors import ConfigError
from rightsizer.evaluate import check_task_data, measure_latency, pick_shots
from rightsizer.inference import build_prompt, load_model, predict, with_format
from rightsizer.runtime.target import RuntimeTarget, resolve_target
from rightsizer.prompting import format_name
from rightsizer.models import load_config
from rightsizer.retrieval import for_rung, retrieval_figures
from rightsizer.screening import Screened, screened_quality
from rightsizer.schema.task import CHEAP_RUNGS
from rightsizer.taskspec import Screening, TaskSpec


def count_params_from_config(config) -> int:
    """Exact parameter count of a config: by its family's rules, or counted on the meta device
    for an architecture no family covers (``rightsizer.sizing.params``). ConfigError when
    neither can (a model_type transformers does not know)."""
    from rightsizer.sizing import count_params

    return int(count_params(config).total)


def _sized(spec: TaskSpec) -> tuple[list[tuple[str, int, object]], list[dict]]:
    """``(ref, params, config)`` per candidate, smallest first (configs only, no weights), and
    the candidates that cannot be sized, each with its reason (dropped, not fatal: the others
    go on). A candidate whose config cannot be read at all is still an error."""
    sized, unsizable = [], []
    for ref in spec.candidates:
        config = load_config(ref, spec.trust_remote_code)
        try:
            sized.append((ref, count_params_from_config(config), config))
        except ConfigError as e:
            unsizable.append({"candidate": ref, "params": None, "kind": "unsized", "reason": str(e)})
    return sorted(sized, key=lambda x: x[1]), unsizable


def slo_feasible(spec: TaskSpec, config) -> tuple[bool, str]:
    """Whether some catalog GPU serves the model within the task's SLO at some precision
    the task allows (bf16 or one of ``precisions``); ``(False, why)`` when none does."""
    from rightsizer.errors import NoFeasibleOption
    from rightsizer.sizing import SLO as SizingSLO
    from rightsizer.sizing import Workload as SizingWorkload
    from rightsizer.sizing import recommend

    precisions = list(dict.fromkeys(["bf16", *spec.precisions]))
    try:
        rec = recommend(config, SizingWorkload.of(spec.workload), SizingSLO.of(spec.slo), precisions=precisions)
    except NoFeasibleOption as e:
        return False, str(e)
    return True, f"{rec.chosen.label} {rec.chosen.precision}"


@dataclass
class RungResult:
    """One (candidate, rung) evaluation of the ladder.

    ``n`` rows of the ``n_total`` eval rows were scored: fewer when screening stopped the
    rung early (``screened_out``; ``bound`` is then the highest full-split score it could
    still have reached). ``seconds`` is the rung's whole cost (LoRA training included,
    ``train_seconds`` of it).
    """

    candidate: str
    params: int
    rung: str
    score: float
    ci_low: float
    ci_high: float
    value: float  # what the decision rule compared with the threshold
    threshold: float
    passed: bool
    n: int
    seconds: float
    reason: str = ""
    n_total: int = 0
    screened_out: bool = False
    bound: float | None = None
    stages: list[int] = field(default_factory=list)
    train_seconds: float = 0.0
    prompt_format: str = "raw"  # how its prompts were rendered (``prompting``): chat or raw
    metrics: dict[str, float] = field(default_factory=dict)
    training: dict = field(default_factory=dict)  # LoRA rung: steps, final loss, tokens/s, ...
    retrieval: dict = field(default_factory=dict)  # a rung that retrieves: k, recall@k, misses

    def to_dict(self) -> dict:
        return asdict(self)


def _drop_line(d: dict) -> str:
    if d.get("kind", "slo") == "unsized":
        return f"{d['candidate']}: dropped before evaluation, cannot be sized ({d['reason']})"
    return (f"{d['candidate']} ({d['params']:,} params): dropped before evaluation, "
            f"cannot meet the SLO on any catalog GPU ({d['reason']})")


@dataclass
class Selection:
    """The ladder's outcome for one task.

    ``order`` lists every candidate that could be sized, by size; ``dropped`` those removed
    before any evaluation (``candidate``, ``params``, ``kind``: "slo" for the SLO pre-filter,
    "unsized" for one the sizing engine cannot model, with ``params`` None when not even its
    parameters can be counted; ``reason``). ``eval_examples`` and
    ``eval_seconds`` are what the ladder spent; ``full_examples`` is what evaluating every
    kept candidate at every rung on the full split would have scored.
    """

    task: str
    metric: str
    threshold: float
    decision_rule: str
    order: list[tuple[str, int]]
    tried: list[RungResult]
    chosen: RungResult | None
    shots: list[dict] = field(default_factory=list)
    model_dir: str = ""  # the chosen model, ready to load (LoRA merged in)
    eval_examples: int = 0
    eval_seconds: float = 0.0
    full_examples: int = 0
    dropped: list[dict] = field(default_factory=list)
    rungs: list[str] = field(default_factory=list)  # the rungs the spec enabled
    latency: dict[str, dict] = field(default_factory=dict)  # candidate -> measured here
    retrieval: dict = field(default_factory=dict)  # the retriever on the eval split (recall@k)
    target: dict = field(default_factory=dict)  # the runtime target every candidate ran on (RuntimeTarget.to_dict)
    # ladder.cascade: the pairs judged (smaller candidate, then the chosen one on deferral), see _cascade
    cascade: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.chosen is not None

    def kept_cascade(self) -> dict | None:
        """The ladder's kept cascade pair (``ladder.cascade``) whose small model was saved, or None."""
        kept = (self.cascade or {}).get("kept")
        if kept is None:
            return None
        pair = self.cascade["pairs"][kept]
        return pair if pair.get("small_model_dir") else None

    def rejections(self) -> list[str]:
        """Why each smaller/cheaper option was rejected, one line each (drops first: the
        candidates that cannot be sized, whatever their size, and those the SLO rules out)."""
        return ([_drop_line(d) for d in self.dropped
                 if self.chosen is None or d["params"] is None or d["params"] < self.chosen.params]
                + [r.reason for r in self.tried if not r.passed])

    def spent(self) -> dict:
        """Evaluations spent: examples and seconds, per rung and in total."""
        per_rung: dict[str, dict] = {}
        for r in self.tried:
            d = per_rung.setdefault(r.rung, {"examples": 0, "seconds": 0.0, "train_seconds": 0.0})
            d["examples"] += r.n
            d["seconds"] += r.seconds
            d["train_seconds"] += r.train_seconds
        return {"examples": self.eval_examples, "seconds": self.eval_seconds,
                "full_examples": self.full_examples,
                "ratio": self.eval_examples / self.full_examples if self.full_examples else None,
                "per_rung": per_rung}

    def best_per_candidate(self) -> dict[str, RungResult]:
        best: dict[str, RungResult] = {}
        for r in self.tried:
            if r.candidate not in best or _rank(r) > _rank(best[r.candidate]):
                best[r.candidate] = r
        return best

    def needs(self) -> list[str]:
        """What would make a candidate pass, most specific first (when nothing passes)."""
        out: list[str] = []
        best = self.best_per_candidate()
        if not best:
            if any(d.get("kind", "slo") == "slo" for d in self.dropped):
                out.append("a looser SLO (ttft_ms/tpot_ms/throughput) or a faster GPU catalog: "
                           "every candidate was dropped by the SLO pre-filter")
            if any(d.get("kind") == "unsized" for d in self.dropped):
                out.append("a candidate the sizing engine can model (a model_type that transformers "
                           "knows, or a family in rightsizer/families/)")
            return out
        top = max(best.values(), key=_rank)
        gap = self.threshold - top.value
        out.append(f"a lower bar: {self.metric} threshold {top.value:.3f} (now {self.threshold}) "
                   f"would pick {top.candidate} at rung {top.rung}"
                   + (" if the full eval split confirms it" if top.screened_out else ""))
        largest = max(p for _, p in self.order)
        dropped_bigger = [d["candidate"] for d in self.dropped
                          if d.get("kind", "slo") == "slo" and d["params"] > top.params]
        if top.params >= largest or not dropped_bigger:
            out.append(f"a bigger candidate than {max(best.values(), key=lambda r: r.params).candidate}"
                       f" (the best falls {gap:.3f} short)")
        else:
            out.append(f"a looser SLO so that {', '.join(dropped_bigger)} (dropped by the SLO "
                       "pre-filter) can be tried")
        if "lora" not in self.rungs:
            out.append("the lora rung (switched off in ladder.rungs)")
        else:
            lora = [r for r in self.tried if r.rung == "lora"]
            gains = [r.value - max((z.value for z in self.tried if z.candidate == r.candidate
                                    and z.rung != "lora"), default=r.value) for r in lora]
            if any(g > 0 for g in gains):
                out.append("more training data or LoRA steps (LoRA improved the score by up to "
                           f"{max(gains):.3f})")
            else:
                out.append("more or better training data (LoRA did not help)")
        recall = self.retrieval.get("recall_at_k")
        if recall is not None and recall < 1.0:
            out.append(f"a better knowledge source, chunking or a larger retrieval.k (recall@"
                       f"{self.retrieval['k']} is {recall:.3f}: the gold passage was missed for "
                       f"{len(self.retrieval['missed_rows'])} eval rows)")
        if self.decision_rule == "ci_lower":
            out.append("a larger eval split (the CI's lower end must clear the bar) or "
                       "decision_rule: point")
        return out

    def summary(self) -> str:
        if self.chosen:
            c = self.chosen
            rule = "CI lower end" if self.decision_rule == "ci_lower" else "score"
            return (f"{self.task}: {c.candidate} ({c.params:,} params) passes at rung "
                    f"{c.rung} with {self.metric} {rule} {c.value:.3f} >= {self.threshold}"
                    + _recall_note(c.retrieval))
        per = "; ".join(
            f"{k} best {v.value:.3f} ({v.rung}"
            + (f", stopped after {v.n}/{v.n_total} examples, at most {v.bound:.3f})"
               if v.screened_out else ")")
            for k, v in self.best_per_candidate().items())
        dropped = "; ".join(f"{d['candidate']} dropped ({'SLO' if d.get('kind', 'slo') == 'slo' else 'cannot be sized'})"
                            for d in self.dropped)
        detail = "; ".join(x for x in (per, dropped) if x)
        return (f"{self.task}: NO candidate reaches {self.metric} >= {self.threshold} "
                f"({detail}). Would be needed: " + "; or ".join(self.needs()) + ".")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def save(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "Selection":
        d = json.loads(Path(path).read_text())
        d.pop("passed", None)
        d["order"] = [tuple(x) for x in d["order"]]
        d["tried"] = [RungResult(**r) for r in d["tried"]]
        d["chosen"] = RungResult(**d["chosen"]) if d["chosen"] else None
        return cls(**d)


def _recall_note(figures: dict) -> str:
    """``" (retrieval recall@k x)"`` for a rung that retrieved with gold passages, else ""."""
    if not figures or figures.get("recall_at_k") is None:
        return ""
    return f" (retrieval recall@{figures['k']} {figures['recall_at_k']:.3f})"


def _rank(r: RungResult) -> tuple:
    """Best result of a candidate: full-split results before screened-out ones, then value."""
    return (not r.screened_out, r.value)


def _record(spec, ref, params, rung, s: Screened, train_seconds: float = 0.0,
            training: dict | None = None, retrieval: dict | None = None,
            prompt_format: str = "raw") -> RungResult:
    q = s.quality
    value = q.value_for(spec.decision_rule)
    passed = not s.stopped and value >= spec.threshold
    rule = "CI lower bound" if spec.decision_rule == "ci_lower" else "score"
    if passed:
        reason = ""
    elif s.stopped:
        reason = (f"{ref} ({params:,} params) {rung}: screened out after {q.n} of {s.n_total} "
                  f"examples: {spec.metric} {q.score:.3f} so far, at most {s.bound:.3f} on the "
                  f"full split < threshold {spec.threshold}")
    else:
        reason = (f"{ref} ({params:,} params) {rung}: {spec.metric} {rule} "
                  f"{value:.3f} < threshold {spec.threshold}")
    if reason:
        reason += _recall_note(retrieval or {})
    return RungResult(candidate=ref, params=params, rung=rung, score=q.score, ci_low=q.ci_low,
                      ci_high=q.ci_high, value=value, threshold=spec.threshold, passed=passed,
                      n=q.n, seconds=q.seconds + train_seconds, reason=reason,
                      n_total=s.n_total, screened_out=s.stopped, bound=s.bound,
                      stages=s.stages, train_seconds=train_seconds,
                      metrics={**q.metrics, **q.calibration}, training=training or {},
                      retrieval=retrieval or {}, prompt_format=prompt_format)


def _save_chosen(model, tokenizer, out: Path) -> str:
    """Write the chosen model (LoRA merged into the base) as safetensors, atomically."""
    if hasattr(model, "merge_and_unload"):  # a PEFT model: fold the adapter in for serving
        model = model.merge_and_unload()
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return str(out)


def _latency(model, tok, spec: TaskSpec, row: dict, repeats: int) -> dict:
    lat = measure_latency(model, tok, build_prompt(spec, row),
                          output_tokens=spec.workload.output_tokens, repeats=repeats)
    return lat.to_dict()


def check_context(spec: TaskSpec, configs: list[tuple[str, object]]) -> None:
    """Every LoRA ``max_seq_len`` of the spec fits every candidate's context; one
    ConfigError naming the field and candidate otherwise (before any model loads)."""
    from rightsizer.families import context_length

    sections = [("ladder.lora", spec.ladder.lora)] if "lora" in spec.ladder.rungs else []
    if "lora" in spec.ladder.rungs and spec.finetune.enabled:
        sections.append(("finetune", spec.finetune))
    problems = []
    for ref, config in configs:
        ctx = context_length(config)
        for where, lora in sections:
            if ctx is not None and lora.max_seq_len is not None and lora.max_seq_len > ctx:
                problems.append(f"{where}.max_seq_len: {lora.max_seq_len} is longer than the "
                                f"context of candidate {ref} ({ctx} tokens); set it to {ctx} or less")
    if problems:
        raise ConfigError(problems, spec.name)


def _lora_rung(spec: TaskSpec, ref: str, model, train: list[dict], workdir: Path,
               progress: bool):
    """The LoRA rung: the spec's ``ladder.lora`` run through the one training entry point
    (in this process), its adapter then applied to the loaded candidate for scoring."""
    from peft import PeftModel

    from rightsizer.finetune.task import train_for_task, training_figures

    result = train_for_task(spec, ref, spec.ladder.lora, train, workdir, name=f"adapter-{ref}",
                            progress=progress)
    return PeftModel.from_pretrained(model, result["adapter_dir"]).eval(), training_figures(result)


def select_model(spec: TaskSpec, workdir: str | Path, progress: bool = True,
                 screening: Screening | None = None, exhaustive: bool = False,
                 latency_repeats: int = 0, target: RuntimeTarget | None = None) -> Selection:
    """Run the ladder for one task; the chosen model is saved under ``workdir``.

    ``screening`` overrides the spec's screening settings (``Screening(enabled=False)``
    scores every rung tried on the full split). ``exhaustive`` keeps going after the first
    pass, through every kept candidate and rung (the decision stays the first pass); the
    benchmark uses it as the "evaluate everything" baseline. ``latency_repeats`` > 0
    measures each candidate tried on this machine (``Selection.latency``). ``target``: where
    and in which dtype every candidate loads (default: this machine's, ``resolve_target``).
    """
    target = target or resolve_target()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if "retrieval" in spec.ladder.rungs and spec.retrieval is None:
        raise ConfigError("ladder.rungs: 'retrieval' needs a knowledge source (a retrieval: "
                          "section)", spec.name)
    train, evals = check_task_data(spec)
    # the spec each rung runs with: the index (built once, cached) attached where it retrieves
    rung_spec = {rung: for_rung(spec, rung) for rung in spec.ladder.rungs}
    figures = next((retrieval_figures(s, evals) for s in rung_spec.values() if s.index is not None), {})
    # latency on the longest prompt a rung may serve: with its passages where one retrieves
    latency_spec = next((s for s in rung_spec.values() if s.index is not None), spec)
    sized, dropped = _sized(spec)
    check_context(spec, [(ref, config) for ref, _, config in sized])
    order = [(ref, params) for ref, params, _ in sized]
    kept = []
    for ref, params, config in sized:
        try:
            ok, why = slo_feasible(spec, config)
        except ConfigError as e:  # the sizing engine cannot model it: this candidate only
            dropped.append({"candidate": ref, "params": params, "kind": "unsized", "reason": str(e)})
            continue
        if ok:
            kept.append((ref, params))
        else:
            dropped.append({"candidate": ref, "params": params, "kind": "slo", "reason": why})
    shots = pick_shots(spec, train, spec.ladder.few_shot_k) if "few_shot" in spec.ladder.rungs else []
    tried: list[RungResult] = []
    chosen, chosen_shots, model_dir = None, [], ""
    latency: dict[str, dict] = {}
    start = time.perf_counter()
    for ref, params in kept:
        model, tok = load_model(ref, trust_remote_code=spec.trust_remote_code, target=target)
        if latency_repeats > 0:
            latency[ref] = _latency(model, tok, with_format(latency_spec, tok, model.config), evals[0],
                                    latency_repeats)
        for rung in spec.ladder.rungs:
            rspec = with_format(rung_spec[rung], tok, model.config)
            train_seconds, training = 0.0, {}
            if rung == "lora":
                t0 = time.perf_counter()
                model, training = _lora_rung(rspec, ref, model, train, workdir, progress)
                train_seconds = time.perf_counter() - t0
            # the retrieval rung uses no shots: the gain over zero-shot is the retrieval's
            s = screened_quality(model, tok, rspec, evals, spec.threshold,
                                 shots=shots if rung == "few_shot" else None,
                                 screening=screening, progress=progress)
            result = _record(spec, ref, params, rung, s, train_seconds, training,
                             figures if rspec.index is not None else None, format_name(rspec))
            tried.append(result)
            if result.passed and chosen is None:
                chosen, chosen_shots = result, (shots if rung == "few_shot" else [])
                model_dir = _save_chosen(model, tok, workdir / "chosen")
                if not exhaustive:
                    break
        if chosen is not None and not exhaustive:
            break
    pairs = (_cascade(spec, rung_spec, evals, tried, chosen, model_dir, chosen_shots, shots, target, workdir)
             if spec.ladder.cascade and chosen is not None else {})
    return Selection(task=spec.name, metric=spec.metric, threshold=spec.threshold,
                     decision_rule=spec.decision_rule, order=order, tried=tried, chosen=chosen,
                     shots=chosen_shots, model_dir=model_dir,
                     eval_examples=sum(r.n for r in tried),
                     eval_seconds=time.perf_counter() - start,
                     full_examples=len(kept) * len(spec.ladder.rungs) * len(evals),
                     dropped=dropped, rungs=list(spec.ladder.rungs), latency=latency,
                     retrieval=figures, target=target.to_dict(), cascade=pairs)


def _cascade(spec: TaskSpec, rung_spec: dict[str, TaskSpec], evals: list[dict], tried: list[RungResult],
             chosen: RungResult, model_dir: str, chosen_shots: list[dict], shots: list[dict],
             target: RuntimeTarget, workdir: Path) -> dict:
    """The ladder's cascade option: each smaller candidate (ascending) at its best cheap rung
    (no training) paired with the chosen model, judged by ``cascade.judge`` on the full eval
    split; the first pair that meets the bar is kept and its small model saved beside the
    chosen one. ``{"pairs": [...], "kept": index or None, "reason": why none was judged}``;
    which pair is served is the sizing step's choice (``cascade.priced``: cheaper than the
    chosen model alone)."""
    smaller = []
    for r in tried:  # the ladder tried the candidates by size: those before the chosen one failed
        if r.candidate == chosen.candidate:
            break
        if r.rung in CHEAP_RUNGS and (not smaller or smaller[-1].candidate != r.candidate):
            smaller.append(r)
        elif r.rung in CHEAP_RUNGS and _rank(r) > _rank(smaller[-1]):
            smaller[-1] = r
    if not smaller:
        return {"pairs": [], "kept": None, "reason": "no smaller candidate was tried at a cheap rung"}
    if len(evals) < MIN_EXAMPLES:
        return {"pairs": [], "kept": None, "reason": f"the eval split has {len(evals)} examples; a cascade "
                                                     f"needs {MIN_EXAMPLES} to choose and confirm a threshold"}
    tt = tasktypes.get(spec.type)
    big_model, big_tok = load_model(model_dir, trust_remote_code=spec.trust_remote_code, target=target)
    big_spec = with_format(rung_spec[chosen.rung], big_tok, big_model.config)
    big = predict(big_model, big_tok, big_spec, evals, shots=chosen_shots or None)
    del big_model
    raw_gold = [r[spec.label_field] for r in evals]
    gold, big_answers = tt.scoring_inputs(spec, raw_gold, big.answers)
    pairs: list[dict] = []
    for best in smaller:
        model, tok = load_model(best.candidate, trust_remote_code=spec.trust_remote_code, target=target)
        small_spec = with_format(rung_spec[best.rung], tok, model.config)
        small_shots = shots if best.rung == "few_shot" else []
        small = predict(model, tok, small_spec, evals, shots=small_shots or None, confidence=True)
        confidence = tt.confidence(small_spec, small)
        if confidence is None:  # every task type has one; a new type that does not is said so
            return {"pairs": pairs, "kept": None, "reason": f"a {spec.type} task has no confidence to defer on"}
        _, small_answers = tt.scoring_inputs(spec, raw_gold, small.answers)
        judged = judge(best.candidate, chosen.candidate, gold, small_answers, big_answers, confidence,
                       spec.metric, spec.labels, spec.threshold, spec.decision_rule,
                       tolerance=spec.quality_tolerance)
        pairs.append({**judged.to_dict(), "small_params": best.params, "small_rung": best.rung,
                      "small_shots": small_shots, "big_params": chosen.params, "big_rung": chosen.rung,
                      "small_model_dir": ""})
        if judged.meets_bar:
            pairs[-1]["small_model_dir"] = _save_chosen(model, tok, workdir / "cascade_small")
            return {"pairs": pairs, "kept": len(pairs) - 1, "reason": ""}
    return {"pairs": pairs, "kept": None, "reason": "no pair meets the bar on the confirm half"}
