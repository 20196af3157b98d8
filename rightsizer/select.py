"""The model-selection ladder: the smallest candidate and the cheapest rung that pass.

Candidates are ordered by parameter count computed from their configs (never by name).
For each candidate, smallest first, the rungs are tried in order of cost (zero-shot,
few-shot, LoRA fine-tune); the first rung that clears the task's bar wins. Every rung
tried is recorded, so the decision record can say why each smaller option was rejected.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rightsizer.evaluate import (QualityResult, build_prompt, evaluate_quality, load_rows,
                                 pick_shots)
from rightsizer.models import load_config, load_model
from rightsizer.taskspec import TaskSpec

BUNDLE_FILE = "rightsizer.json"


def count_params_from_config(config) -> int:
    """Exact parameter count of a config, from a model built on the meta device (no weights)."""
    try:
        from rightsizer.sizing import count_params
    except ImportError:  # sizing engine not installed: same count via transformers itself
        count_params = None
    if count_params is not None:
        return int(count_params(config).total)
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def order_candidates(spec: TaskSpec) -> list[tuple[str, int]]:
    """Candidates with their parameter counts, smallest first."""
    sized = [(ref, count_params_from_config(load_config(ref, spec.trust_remote_code)))
             for ref in spec.candidates]
    return sorted(sized, key=lambda x: x[1])


@dataclass
class RungResult:
    """One (candidate, rung) evaluation of the ladder."""

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

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Selection:
    """The ladder's outcome for one task."""

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

    @property
    def passed(self) -> bool:
        return self.chosen is not None

    def rejections(self) -> list[str]:
        """Why each smaller/cheaper option was rejected, one line each."""
        return [r.reason for r in self.tried if not r.passed]

    def summary(self) -> str:
        if self.chosen:
            c = self.chosen
            return (f"{self.task}: {c.candidate} ({c.params:,} params) passes at rung "
                    f"{c.rung} with {self.metric} {c.value:.3f} >= {self.threshold}")
        best = {}
        for r in self.tried:
            if r.candidate not in best or r.value > best[r.candidate].value:
                best[r.candidate] = r
        per = "; ".join(f"{k} best {v.value:.3f} ({v.rung})" for k, v in best.items())
        return (f"{self.task}: NO candidate reaches {self.metric} >= {self.threshold} "
                f"({per}). Options: a bigger candidate, more training data or LoRA steps, "
                "or a lower threshold.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["passed"] = self.passed
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: str | Path) -> "Selection":
        d = json.loads(Path(path).read_text())
        d.pop("passed", None)
        d["order"] = [tuple(x) for x in d["order"]]
        d["tried"] = [RungResult(**r) for r in d["tried"]]
        d["chosen"] = RungResult(**d["chosen"]) if d["chosen"] else None
        return cls(**d)


def _record(spec, ref, params, rung, q: QualityResult) -> RungResult:
    value = q.value_for(spec.decision_rule)
    passed = value >= spec.threshold
    rule = "CI lower bound" if spec.decision_rule == "ci_lower" else "score"
    reason = "" if passed else (f"{ref} ({params:,} params) {rung}: {spec.metric} {rule} "
                                f"{value:.3f} < threshold {spec.threshold}")
    return RungResult(candidate=ref, params=params, rung=rung, score=q.score, ci_low=q.ci_low,
                      ci_high=q.ci_high, value=value, threshold=spec.threshold, passed=passed,
                      n=q.n, seconds=q.seconds, reason=reason)


def _save_chosen(model, tokenizer, out: Path) -> str:
    """Write the chosen model (LoRA merged into the base) as safetensors, atomically."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload"):  # a PEFT model: fold the adapter in for serving
        model = model.merge_and_unload()
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return str(out)


def select_model(spec: TaskSpec, workdir: str | Path, progress: bool = True) -> Selection:
    """Run the ladder for one task; the chosen model is saved under ``workdir``."""
    from rightsizer.finetune import train_lora

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    train = load_rows(spec, spec.train_split)
    evals = load_rows(spec, spec.eval_split, spec.max_eval_examples)
    order = order_candidates(spec)
    shots = pick_shots(spec, train, spec.ladder.few_shot_k) if "few_shot" in spec.ladder.rungs else []
    tried: list[RungResult] = []
    start = time.perf_counter()
    for ref, params in order:
        model, tok = load_model(ref, trust_remote_code=spec.trust_remote_code)
        for rung in spec.ladder.rungs:
            if rung == "zero_shot":
                q = evaluate_quality(model, tok, spec, evals, progress=progress)
            elif rung == "few_shot":
                q = evaluate_quality(model, tok, spec, evals, shots=shots, progress=progress)
            else:  # lora
                lora = spec.ladder.lora
                examples = [(build_prompt(spec, r), r[spec.label_field]) for r in train]
                safe = ref.replace("/", "--").replace(":", "-")
                model, _ = train_lora(model, tok, examples, workdir / f"adapter-{safe}",
                                      rank=lora.rank, alpha=lora.alpha, steps=lora.steps,
                                      learning_rate=lora.learning_rate,
                                      batch_size=lora.batch_size,
                                      target_modules=lora.target_modules, progress=progress)
                q = evaluate_quality(model, tok, spec, evals, progress=progress)
            result = _record(spec, ref, params, rung, q)
            tried.append(result)
            if result.passed:
                sel = Selection(task=spec.name, metric=spec.metric, threshold=spec.threshold,
                                decision_rule=spec.decision_rule, order=order, tried=tried,
                                chosen=result, shots=shots if rung == "few_shot" else [],
                                eval_examples=sum(r.n for r in tried),
                                eval_seconds=time.perf_counter() - start)
                sel.model_dir = _save_chosen(model, tok, workdir / "chosen")
                return sel
    return Selection(task=spec.name, metric=spec.metric, threshold=spec.threshold,
                     decision_rule=spec.decision_rule, order=order, tried=tried, chosen=None,
                     eval_examples=sum(r.n for r in tried),
                     eval_seconds=time.perf_counter() - start)
