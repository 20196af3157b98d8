"""MLRun step ``quantize``: the lowest precision that keeps the task's quality."""

from __future__ import annotations

import mlrun

from functions.mlrun_io import (if_file, log_results, localize_dir, log_model_dir, log_plot, log_table, made_parent,
                               project_file, reusable, run_layout)
from rightsizer.finetune.task import production_for
from rightsizer.quantize import precision_figure, quantize_for_task
from rightsizer.select import Selection
from rightsizer.taskspec import load_task


def quantize(context: mlrun.MLClientCtx, task_spec: str, selection: str, model_dir: str,
             gptq_model_dir: str = "", finetuned: str = "auto") -> None:
    """Search bf16 -> int8 -> int4 on the chosen model; register the serving bundle.

    ``gptq_model_dir``: the quantize-gptq step's checkpoint (the pipeline passes it when a
    GPU is configured); it is scored as one more int4 trial and bundled when kept.
    ``finetuned``: "auto" quantizes the production adapter (merged) instead of
    ``model_dir`` when the chosen rung is LoRA (the finetune step's summary in this run's
    layout: KFP cannot pass the output of a step under a condition); "off" never does.

    Logs: ``precisions`` (table), ``precision_chart`` (Plotly), the task's model (registered
    with ``log_model``: weights, tokenizer and ``rightsizer.json`` with the quantization
    config), results ``precision``, ``backend``, ``memory_before_bytes``,
    ``memory_after_bytes``, ``score`` and ``bundle_dir``.
    """
    spec = load_task(project_file(task_spec))
    sel = Selection.load(selection)
    layout = run_layout(context)
    reuse = reusable(context, "quantize",
                     {"task": spec, "selection": selection, "model_dir": model_dir,
                      "gptq_model_dir": gptq_model_dir, "finetuned": finetuned,
                      "production": if_file(layout.production_file(spec.name))},
                     [layout.quantize_dir(spec.name)])
    if reuse.hit():
        return
    prod = production_for(spec, sel.chosen.candidate, sel.chosen.rung, selection,
                          layout.production_file(spec.name), finetuned)
    adapter = None
    if prod:
        model_dir = prod["merged_dir"]
        adapter = {"kind": "production", "score": prod["score"], "merged_dir": prod["merged_dir"],
                   "adapter_dir": prod["adapter_dir"], "screening_score": sel.chosen.score}
    elif sel.chosen.rung == "lora":
        adapter = {"kind": "screening", "score": sel.chosen.score,
                   "adapter_dir": sel.chosen.training.get("adapter_dir")}
    bundle = made_parent(layout.bundle_dir(spec.name))
    if (pair := sel.kept_cascade()) is not None:  # a store URI on a cluster: a local copy here
        pair["small_model_dir"] = localize_dir(pair["small_model_dir"])
    pre = {"gptq": localize_dir(gptq_model_dir)} if gptq_model_dir else None
    out = quantize_for_task(spec, sel, localize_dir(model_dir), bundle, pre_quantized=pre,
                            adapter=adapter)
    log_table(context, "precisions", out.search.to_rows())
    log_plot(context, "precision_chart", precision_figure(out.search, task=spec.name, metric=spec.metric))
    kept = out.search.kept
    model_ref = log_model_dir(
        context, spec.name, out.bundle_dir, framework="transformers",
        metrics={spec.metric: out.score, "memory_bytes": kept.memory_bytes},
        labels={"task": spec.name, "rung": sel.chosen.rung, "precision": kept.precision,
                "base_model": sel.chosen.candidate, "backend": kept.backend or "none",
                "adapter": (adapter or {}).get("kind", "none")},
        parameters={"quant_config": kept.to_config()})
    log_results(context, {"precision": kept.precision, "backend": kept.backend or "none",
                         "memory_before_bytes": out.memory_before,
                         "memory_after_bytes": kept.memory_bytes, "score": out.score,
                         "bundle_dir": model_ref})
    reuse.done()
