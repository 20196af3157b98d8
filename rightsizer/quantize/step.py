"""The ``quantize`` step for one task: precision search on the chosen model, then the bundle.

The search itself lives in ``search.py``, the backends in ``rightsizer.runtime``; this module
wires it to the task: the evaluation harness as the quality check, the selection's score as
the baseline, and the serving bundle as the output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


from rightsizer import tasktypes
from rightsizer.runtime.target import DTYPES, RuntimeTarget, resolve_target
from rightsizer.bundle import add_cascade, write_bundle
from rightsizer.evaluate import evaluate_quality, load_rows
from rightsizer.inference import load_model, load_tokenizer
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
                      bundle_dir: str | Path, progress: bool = True,
                      pre_quantized: dict[str, str] | None = None,
                      adapter: dict | None = None, target: RuntimeTarget | None = None) -> QuantizeOutcome:
    """Keep the lowest precision within ``spec.quality_tolerance``; write the serving bundle.

    ``pre_quantized`` maps a pre-quantized backend to its checkpoint folder (``{"gptq":
    <quantize-gptq output>}``): it joins the search as one more int4 trial, and when kept,
    the bundle is made from that checkpoint. ``adapter``: which LoRA adapter ``model_dir``
    has merged in, recorded in the bundle. When the chosen rung retrieves, the search scores
    with the task's retrieval index and the bundle carries it. ``target``: where the trials
    run and the dtype the quantized ones compute in (default: this machine's, ``resolve_target``).
    """
    from rightsizer.quantize.search import search_precision
    from rightsizer.retrieval import for_rung

    task_spec, spec = spec, for_rung(spec, sel.chosen.rung)
    target = target or resolve_target()
    device = target.device
    rows = load_rows(spec, spec.eval_split, spec.max_eval_examples)
    trust = spec.trust_remote_code  # off unless the task spec turns it on
    tok = load_tokenizer(str(model_dir), trust)

    def load():
        return load_model(model_dir, dtype="auto", device=device, trust_remote_code=trust)[0]

    def score(model) -> float:
        return evaluate_quality(model, tok, spec, rows, shots=sel.shots).score

    base = load()
    memory_before = state_dict_bytes(base)
    baseline_score = score(base)
    del base
    precisions = ["bf16", *[p for p in spec.precisions if p != "bf16"]]
    pre = {name: _pre_quantized(name, path, target, trust) for name, path in (pre_quantized or {}).items()
           if "int4" in precisions}  # the task's precisions rule: no int4, no GPTQ trial
    search = search_precision(load, score, baseline_score=baseline_score,
                              tolerance=tasktypes.get(spec.type).tolerance(spec), precisions=precisions,
                              device=device, progress=progress, pre_quantized=pre,
                              compute_dtype=target.compute_dtype)
    kept = search.kept
    kept_score = next((t.score for t in search.trials if t is kept), baseline_score)
    source = pre_quantized[kept.backend] if kept.pre_quantized is not None else model_dir
    bundle = write_bundle(source, spec, bundle_dir, base_model=sel.chosen.candidate,
                          rung=sel.chosen.rung, shots=sel.shots, quant_config=kept.to_config(),
                          metrics={spec.metric: kept_score, "precision_search": search.to_rows()},
                          adapter=adapter)
    pair = sel.kept_cascade()
    if pair is not None:  # the small model goes with the chosen one, as the ladder judged it
        add_cascade(bundle, pair["small_model_dir"], for_rung(task_spec, pair["small_rung"]), pair)
    return QuantizeOutcome(search=search, bundle_dir=bundle, memory_before=memory_before,
                           score=kept_score)


def _pre_quantized(name: str, path: str | Path, target: RuntimeTarget, trust: bool):
    """A GPTQ checkpoint as a trial, loaded in the dtype the in-place trials compute in
    (``target.compute_dtype``: fp32 on a CPU without bf16 units), so its bytes and arithmetic
    are compared on the same footing as round-to-nearest int4's."""
    from rightsizer.errors import ConfigError
    from rightsizer.runtime.gptq_format import load_gptq_model, read_gptq_config
    from rightsizer.quantize.search import PreQuantized

    if name != "gptq":
        raise ConfigError(f"pre_quantized: {name!r}; only 'gptq' checkpoints load in this environment")
    qcfg = read_gptq_config(path)  # ConfigError now, before any evaluation, if it is not one
    dtype = "bfloat16" if target.is_cuda else target.compute_dtype  # the CUDA kernel computes in bf16
    config = {"group_size": qcfg["group_size"], "bits": qcfg["bits"], "dtype": dtype,
              "checkpoint_format": qcfg["checkpoint_format"], "desc_act": bool(qcfg.get("desc_act"))}
    return PreQuantized(load=lambda: load_gptq_model(path, dtype=DTYPES[dtype], device=target.device,
                                                     trust_remote_code=trust),
                        config=config)
