"""MLRun step ``size_gpu``: the cheapest GPU that meets the SLOs, and the decision record."""

from __future__ import annotations

import json

import mlrun

from functions.mlrun_io import (log_results, current_project, if_file, localize_dir, log_plot, log_table, project_file,
                                reusable, run_layout, serving_engine_param)
from rightsizer.bundle import read_bundle
from rightsizer.calibrate import load_measurements
from rightsizer.finetune.task import production_for
from rightsizer.evaluate_plots import latency_figure
from rightsizer.size_gpu_tables import ranking_rows
from rightsizer.size_gpu import build_record, save_record, size_for_task, task_lengths
from rightsizer.models import resolve_model_ref
from rightsizer.select import Selection
from rightsizer.sizing import fit_calibration, roofline_figure
from rightsizer.sizing.calibration import factors_for_engine
from rightsizer.taskspec import load_task


def size_gpu(context: mlrun.MLClientCtx, task_spec: str, selection: str, bundle_dir: str,
             precision: str, chosen_evaluation: str, baseline_evaluation: str,
             calibration: str = "", finetuned: str = "auto", price_list: str = "",
             baseline_calibration: str = "") -> None:
    """Rank GPU options for the chosen model (and the baseline) and write the decision record.

    ``calibration``, ``baseline_calibration``: measurements from the evaluate steps of the chosen
    and the baseline model on a catalog GPU; when given, the estimates use factors fitted on
    them together (their ``mode`` says "calibrated"; two models of different depths also fit
    the framework's host cost per layer). ``finetuned``
    "auto": a LoRA choice's record shows the production adapter (finetune step) beside the
    screening run. ``price_list``: the prices (``rightsizer/data/prices/<name>.yaml`` or a
    file); empty: the project's ``price_list`` param, else the default list.

    Logs: ``gpu_ranking`` (table: modelled values, USD), ``roofline`` (Plotly: the chosen option highlighted),
    ``latency_vs_baseline`` (Plotly: chosen and baseline measured latency on one chart),
    ``decision`` (the decision record,
    JSON), results ``gpu``, ``cost_per_1m_tokens``, ``baseline_cost_per_1m_tokens`` and
    ``record`` (its path).
    """
    spec = load_task(project_file(task_spec))
    project = current_project(context)
    price_list = price_list or (project.get_param("price_list", "") if project else "") or None
    layout = run_layout(context)
    reuse = reusable(context, "size_gpu",
                     {"task": spec, "selection": selection, "bundle_dir": bundle_dir,
                      "precision": precision, "chosen_evaluation": chosen_evaluation,
                      "baseline_evaluation": baseline_evaluation, "calibration": calibration,
                      "baseline_calibration": baseline_calibration,
                      "finetuned": finetuned, "price_list": price_list,
                      "serving_engine": serving_engine_param(project),
                      "production": if_file(layout.production_file(spec.name))},
                     [layout.size_gpu_dir(spec.name)])
    if reuse.hit():
        return
    sel = Selection.load(selection)
    bundle = localize_dir(bundle_dir)
    chosen_eval = json.loads(open(chosen_evaluation).read())
    baseline_eval = json.loads(open(baseline_evaluation).read())
    largest = resolve_model_ref(sel.order[-1][0])
    # measurements from the evaluate steps on a catalog GPU -> calibrated efficiency factors
    measurements = load_measurements(calibration, baseline_calibration)
    factors = factors_for_engine(serving_engine_param(project),
                                 fit_calibration(measurements) if measurements else None)
    rec = size_for_task(spec, bundle, precision, factors=factors, price_list=price_list,
                        lengths=task_lengths(spec, chosen_eval))
    searched = read_bundle(bundle).get("metrics", {}).get("precision_search", [])
    prod = production_for(spec, sel.chosen.candidate, sel.chosen.rung, selection,
                          layout.production_file(spec.name), finetuned)
    record = build_record(spec, sel, chosen_eval, baseline_eval, rec, largest, precision,
                          precision_rows=searched, factors=factors, production=prod,
                          price_list=price_list)
    log_table(context, "gpu_ranking", ranking_rows(rec.to_rows()))
    log_plot(context, "roofline", roofline_figure(rec, model=sel.chosen.candidate))
    log_plot(context, "latency_vs_baseline", latency_figure(spec.name, {
        f"chosen {sel.chosen.candidate} ({chosen_eval['precision']})": chosen_eval["latency_by_batch"],
        f"baseline {sel.order[-1][0]} ({baseline_eval['precision']})": baseline_eval["latency_by_batch"]}))
    path = layout.decision_file(spec.name)
    save_record(record, path)
    context.log_artifact("decision", local_path=str(path))
    log_results(context, {"gpu": record["chosen"]["gpu"],
                         "cost_per_1m_tokens": record["chosen"]["cost_per_1m_tokens"],
                         "baseline_cost_per_1m_tokens": record["baseline"]["cost_per_1m_tokens"],
                         "record": str(path)})
    context.logger.info(record["summary"])
    reuse.done()
