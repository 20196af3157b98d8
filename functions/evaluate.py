"""MLRun step ``evaluate``: task quality and latency of one model on this machine."""

from __future__ import annotations

import json

import mlrun

from functions.mlrun_io import log_results, localize_dir, log_plot, log_table, project_file, reusable, run_layout
from rightsizer.atomic import atomic_write_text
from rightsizer.calibrate import measurements_from_latency
from rightsizer.evaluate import evaluate_model
from rightsizer.models import resolve_model_ref
from rightsizer.precisions import get_precision
from rightsizer.evaluate_plots import latency_figure
from rightsizer.runtime.target import resolve_target
from rightsizer.taskspec import load_task


def evaluate(context: mlrun.MLClientCtx, task_spec: str, model: str, split: str = "",
             label: str = "model", output_tokens: int = 0, repeats: int = 20,
             batch_sizes: list = None, device: str = "auto", dtype: str = "auto") -> None:
    """Evaluate ``model`` (candidate reference or serving bundle) on a split of the task.

    The model loads on this pod's runtime target (``rightsizer.runtime.target``; ``device`` and
    ``dtype`` override it; a bundle keeps its own dtype), the same target the chosen model and
    the baseline are both measured on; ``evaluation.json``'s ``target`` and the result
    ``target`` say what it was, and on a catalog GPU the latency rows carry its catalog name
    (``measured_on``), which the sizing engine's calibration reads.

    ``batch_sizes`` (default [1, 4, 16]): latency is measured at each, after a warm-up,
    ``repeats`` times (20: a p95 from 5 runs is nearly the maximum).
    Logs: ``quality`` (with the prompt format used) and ``latency`` (one row per batch size)
    tables, ``samples`` (per row: the prompt exactly as the model read it, the answer, the gold
    answer, the row's score; also ``samples.jsonl`` beside ``evaluation.json``), ``latency_chart``
    (Plotly), ``calibration_measurements`` (on a catalog GPU: prefill/decode timings for the
    sizing engine's calibration), results ``score``, ``ttft_p95_ms``, ``tpot_p95_ms``, ``tokens_per_s``, ``peak_memory_bytes``
    ``evaluation`` (JSON path) and ``calibration`` (measurements path, "" on a CPU).
    """
    spec = load_task(project_file(task_spec))
    target = resolve_target(device, dtype)
    layout = run_layout(context)
    reuse = reusable(context, "evaluate",
                     {"task": spec, "model": model, "split": split, "label": label,
                      "output_tokens": output_tokens, "repeats": repeats, "batch_sizes": batch_sizes,
                      "target": target.to_dict()},
                     [layout.evaluate_dir(spec.name, label)])
    if reuse.hit():
        return
    if mlrun.datastore.is_store_uri(model):
        model = localize_dir(model)
    report = evaluate_model(spec, model, split=split or spec.eval_split,
                            output_tokens=output_tokens or None, repeats=repeats,
                            batch_sizes=tuple(batch_sizes or (1, 4, 16)), target=target)
    samples = report.pop("samples")
    samples_path = atomic_write_text(layout.samples_file(spec.name, label),
                                     "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in samples))
    path = atomic_write_text(layout.evaluation_file(spec.name, label),
                             json.dumps(report, indent=2, sort_keys=True))
    log_table(context, "quality", [{**report["quality"], "prompt_format": report["prompt_format"]}])
    log_table(context, "samples", samples)
    log_table(context, "latency", report["latency_by_batch"])
    log_plot(context, "latency_chart", latency_figure(
        spec.name, {f"{label} ({report['precision']})": report["latency_by_batch"]}))
    # Latency measured on a catalog GPU calibrates the sizing engine (nothing on a CPU).
    measurements = measurements_from_latency(
        resolve_model_ref(model), report["latency_by_batch"],
        precision=get_precision(report["precision"]).sizing_name)
    calibration = ""
    if measurements:
        calibration = str(layout.calibration_file(spec.name, label))
        atomic_write_text(calibration, json.dumps(measurements, indent=2, sort_keys=True))
        context.log_artifact("calibration_measurements", local_path=calibration)
    lat = report["latency"]
    log_results(context, {"score": report["quality"]["score"], "ttft_p95_ms": lat["ttft_p95_ms"],
                         "tpot_p95_ms": lat["tpot_p95_ms"], "tokens_per_s": lat["tokens_per_s"],
                         "peak_memory_bytes": lat["peak_memory_bytes"],
                         "evaluation": str(path), "samples": str(samples_path),
                         "prompt_format": report["prompt_format"], "calibration": calibration,
                         "target": target.summary})
    reuse.done()
