"""The size_and_deploy pipeline's GPU steps on CUDA, for scripts/gpu_checks.sh.

The GPU image has torch, transformers, peft and accelerate but no MLRun, and nothing can be
installed there from the network: this runs what the pipeline's steps run, through the same
library calls the MLRun adapters make (``functions/`` are thin: select -> ``select_model``,
evaluate -> ``evaluate_model``, quantize -> ``quantize_for_task``, size_gpu -> calibration from
the evaluate steps' latencies, ``size_for_task``, ``build_record``), on the demo app's tasks,
with every load on the resolved runtime target (CUDA, bf16 on Ampere and later). It prints, per
task: the target, the decision (model, rung, precision), quality against the bar, what the
chosen model and the baseline were measured on, and the sizing mode (``calibrated`` when the
GPU is a catalog GPU); then the serving engine's measured figures beside the sizing estimate.

    python3 scripts/gpu_check_pipeline.py --out $OUT [--tasks ticket_routing,order_extraction]

Writes ``$OUT/pipeline.json``. The demo's candidates come from ``$RIGHTSIZER_CACHE`` (built here
when missing: a few minutes of CPU; gpu_checks.sh carries them built).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run_task(spec_path: Path, work: Path, target) -> dict:
    from rightsizer.calibrate import measurements_from_latency
    from rightsizer.evaluate import evaluate_model
    from rightsizer.models import resolve_model_ref
    from rightsizer.precisions import get_precision
    from rightsizer.quantize.step import quantize_for_task
    from rightsizer.select import select_model
    from rightsizer.size_gpu import build_record, size_for_task
    from rightsizer.sizing import fit_calibration
    from rightsizer.taskspec import load_task

    spec = load_task(spec_path)
    t0 = time.perf_counter()
    sel = select_model(spec, work / spec.name / "select", progress=False, latency_repeats=3, target=target)
    if not sel.passed:
        return {"task": spec.name, "passed": False, "summary": sel.summary(), "seconds": time.perf_counter() - t0}
    q = quantize_for_task(spec, sel, sel.model_dir, work / spec.name / "bundle", progress=False, target=target)
    chosen = evaluate_model(spec, str(q.bundle_dir), repeats=5, progress=False, batch_sizes=(1, 4, 16), target=target)
    largest = sel.order[-1][0]
    baseline = evaluate_model(spec, largest, repeats=5, progress=False, batch_sizes=(1, 4, 16), target=target)
    measurements = []
    for report, ref in ((chosen, sel.model_dir), (baseline, resolve_model_ref(largest))):
        measurements += measurements_from_latency(ref, report["latency_by_batch"],
                                                  precision=get_precision(report["precision"]).sizing_name)
    factors = fit_calibration(measurements) if measurements else None
    rec = size_for_task(spec, str(q.bundle_dir), q.search.kept.precision, factors=factors)
    record = build_record(spec, sel, chosen, baseline, rec, resolve_model_ref(largest), q.search.kept.precision,
                          factors=factors)
    return {"task": spec.name, "passed": True, "seconds": round(time.perf_counter() - t0, 1),
            "decision": {k: record["chosen"][k] for k in ("model", "rung", "precision", "gpu", "quality")},
            "threshold": spec.threshold, "baseline_quality": record["baseline"]["quality"],
            "chosen_measured_with": record["chosen"]["measured_with"],
            "baseline_measured_with": record["baseline"]["measured_with"],
            "ladder_measured_with": record["ladder_measured_with"],
            "sizing_mode": record["chosen"]["sizing_mode"], "serving_engine": record["serving_engine"],
            "calibration_measurements": len(measurements),
            "chosen_latency_by_batch": chosen["latency_by_batch"],
            "estimate_on_this_gpu": _estimate_here(spec, rec, q.search.kept.precision, factors, target)}


def _estimate_here(spec, rec, precision: str, factors, target) -> dict | None:
    """The sizing engine's figures for the chosen model on the GPU this ran on (None when the
    catalog does not know it), at the task's workload, with the calibrated factors."""
    from rightsizer.precisions import get_precision
    from rightsizer.runtime.target import catalog_device
    from rightsizer.sizing import Workload, estimate

    device = catalog_device(target.device_name) if target.is_cuda else None
    if device is None:
        return None
    wl = Workload(prompt_tokens=spec.workload.prompt_tokens, output_tokens=spec.workload.output_tokens,
                  batch=spec.workload.batch, precision=get_precision(precision).sizing_name)
    est = estimate(rec.model_config, device.name, wl, mig=device.mig, factors=factors)
    return {"gpu": device.label, "precision": wl.precision, "ttft_ms": est.ttft_ms, "tpot_ms": est.tpot_ms,
            "mode": getattr(est, "mode", "")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="/tmp/gpu-out")
    ap.add_argument("--tasks", default="", help="comma-separated task names (default: the demo app's)")
    args = ap.parse_args()
    from rightsizer.demo.bootstrap import bootstrap
    from rightsizer.runtime.target import resolve_target
    from rightsizer.taskspec import app_task_paths

    target = resolve_target()
    print("runtime target:", json.dumps(target.to_dict()), flush=True)
    bootstrap(verbose=False)
    paths = [(name, ROOT / p) for name, p in app_task_paths("tasks/demo_app.yaml", ROOT)]
    wanted = set(filter(None, args.tasks.split(",")))
    out, work = Path(args.out), Path(args.out) / "work"
    work.mkdir(parents=True, exist_ok=True)
    results = []
    for name, path in paths:
        if wanted and name not in wanted:
            continue
        try:
            r = run_task(path, work, target)
        except Exception as e:  # one task's failure is reported; the others still run
            r = {"task": name, "error": f"{type(e).__name__}: {e}"}
        results.append(r)
        print(json.dumps({k: v for k, v in r.items() if k != "chosen_latency_by_batch"}), flush=True)
    (out / "pipeline.json").write_text(json.dumps({"target": target.to_dict(), "tasks": results}, indent=2))
    return 0 if all(r.get("passed") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
