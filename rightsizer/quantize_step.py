"""The ``quantize`` step for one task: precision search on the chosen model, then the bundle.

The search itself (backends, mixed precision) lives in ``rightsizer.quantize``; this module
wires it to the task: the evaluation harness as the quality check, the selection's score as
the baseline, and the serving bundle as the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rightsizer.bundle import write_bundle
from rightsizer.evaluate import evaluate_quality, load_rows
from rightsizer.models import state_dict_bytes
from rightsizer.select import Selection
from rightsizer.taskspec import TaskSpec


@dataclass
class QuantizeOutcome:
    search: object  # rightsizer.quantize.PrecisionSearch
    bundle_dir: Path
    memory_before: int
    score: float


def quantize_for_task(spec: TaskSpec, sel: Selection, model_dir: str | Path,
                      bundle_dir: str | Path, progress: bool = True) -> QuantizeOutcome:
    """Keep the lowest precision within ``spec.quality_tolerance``; write the serving bundle."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rightsizer.quantize import search_precision

    device = "cuda" if torch.cuda.is_available() else "cpu"
    rows = load_rows(spec, spec.eval_split, spec.max_eval_examples)
    trust = spec.trust_remote_code  # off unless the task spec turns it on
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=trust)

    def load():
        return AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True,
                                                    trust_remote_code=trust).to(device).eval()

    def score(model) -> float:
        return evaluate_quality(model, tok, spec, rows, shots=sel.shots).score

    base = load()
    memory_before = state_dict_bytes(base)
    baseline_score = score(base)
    del base
    search = search_precision(load, score, baseline_score=baseline_score,
                              tolerance=spec.quality_tolerance,
                              precisions=["bf16", *[p for p in spec.precisions if p != "bf16"]],
                              device=device, progress=progress)
    kept = search.kept
    kept_score = next((t.score for t in search.trials if t is kept), baseline_score)
    bundle = write_bundle(model_dir, spec, bundle_dir, base_model=sel.chosen.candidate,
                          rung=sel.chosen.rung, shots=sel.shots, quant_config=kept.to_config(),
                          metrics={spec.metric: kept_score, "precision_search": search.to_rows()})
    return QuantizeOutcome(search=search, bundle_dir=bundle, memory_before=memory_before,
                           score=kept_score)
