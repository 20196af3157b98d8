"""MLRun step ``select``: the smallest candidate and cheapest rung that pass the task's bar."""

from __future__ import annotations

import selectors
import sys

import mlrun

from functions.mlrun_io import log_results, log_model_dir, log_plot, log_table, made_dir, project_file, reusable, run_layout
from rightsizer.select_plots import cascade_figure, ladder_figure, leaderboard_rows, pareto_figure
from rightsizer.runtime.target import resolve_target
from rightsizer.select import select_model
from rightsizer.taskspec import load_task

# MLRun's local runtime registers a handler file in sys.modules under its file name, and this
# one's is the standard library's `select`: every later `import select` in the process (httpx,
# the openai client) would get this module. Put the standard one back (selectors holds it).
if sys.modules.get("select") is not selectors.select:
    sys.modules["select"] = selectors.select


def select(context: mlrun.MLClientCtx, task_spec: str, latency_repeats: int = 3, device: str = "auto",
           dtype: str = "auto") -> None:
    """Run the selection ladder for one task spec (YAML path).

    Every candidate loads on this pod's runtime target (``rightsizer.runtime.target``: CUDA in
    bf16, or fp16 on a GPU without it; fp32 on a CPU); ``device`` and ``dtype`` override it.
    The result ``target`` and the selection's ``target`` say what it was.

    Logs: ``leaderboard`` (table: candidate x rung, quality, CI, latency/memory measured
    here, evaluation cost), ``ladder`` and ``pareto`` (Plotly), ``cascade`` (Plotly, when
    ``ladder.cascade`` judged a pair: quality against deferral, ``select_plots.cascade_figure``), the selection-time model as
    ``<task>-selected`` (``log_model``, labels task/rung/precision/base_model; the quantize
    step registers the serving bundle as ``<task>``), a kept cascade's small model as
    ``<task>-cascade-small`` (its reference in the selection, for the quantize step), results ``chosen_model``, ``rung``,
    ``score``, ``ci_low``, ``params``, ``model_dir`` (the chosen model, LoRA merged),
    ``eval_examples``, ``eval_seconds``, ``full_examples``, ``dropped``, ``selection``
    (JSON path) and ``passed``. A rerun with the same task, data, candidates and code reuses
    the finished step (``functions.mlrun_io.reusable``: result ``reused_from``).

    When no candidate reaches the bar the step does not fail: it logs the same tables and
    charts, ``passed`` false, ``summary`` ("NO candidate reaches ... Would be needed: ...")
    and ``needs`` (one line each), and registers no model; the workflow skips the task's later
    steps and the plan and report show it (``rightsizer.unsized``). A bad spec or a missing
    model still fails the step.
    """
    spec = load_task(project_file(task_spec))
    target = resolve_target(device, dtype)
    layout = run_layout(context)
    reuse = reusable(context, "select", {"task": spec, "latency_repeats": latency_repeats,
                                         "target": target.to_dict()},
                     [layout.select_dir(spec.name)])
    if reuse.hit():
        return
    sel = select_model(spec, made_dir(layout.select_dir(spec.name)), latency_repeats=latency_repeats,
                       target=target)
    selection = layout.selection_file(spec.name)
    sel.save(selection)
    log_table(context, "leaderboard", leaderboard_rows(sel))
    log_plot(context, "ladder", ladder_figure(sel))
    log_plot(context, "pareto", pareto_figure(sel))
    if (cascade_chart := cascade_figure(sel)) is not None:  # ladder.cascade judged a pair
        log_plot(context, "cascade", cascade_chart)
    context.log_result("selection", str(selection))
    log_results(context, {"eval_examples": sel.eval_examples,
                         "eval_seconds": round(sel.eval_seconds, 2),
                         "full_examples": sel.full_examples,
                         "dropped": [d["candidate"] for d in sel.dropped],
                         "baseline_model": sel.order[-1][0], "passed": sel.passed,
                         "target": target.summary})
    if not sel.passed:  # an outcome, not an error: the task's later steps are skipped
        log_results(context, {"summary": sel.summary(), "needs": sel.needs()})
        context.logger.warning(sel.summary())
        reuse.done()
        return
    c = sel.chosen
    model_ref = log_model_dir(
        context, f"{spec.name}-selected", sel.model_dir, framework="transformers",
        metrics={spec.metric: c.score, "ci_low": c.ci_low, "ci_high": c.ci_high,
                 **{k: v for k, v in c.metrics.items() if k != spec.metric}},
        labels={"task": spec.name, "rung": c.rung, "precision": target.precision,
                "base_model": c.candidate, "stage": "selection"},
        parameters={"shots": sel.shots, "decision_rule": sel.decision_rule,
                    "threshold": sel.threshold, "why_not_smaller": sel.rejections()})
    log_results(context, {"chosen_model": c.candidate, "rung": c.rung, "score": c.score,
                         "ci_low": c.ci_low, "params": c.params, "model_dir": model_ref})
    if (pair := sel.kept_cascade()) is not None:  # the cascade's small model, where the quantize step reaches it
        pair["small_model_dir"] = log_model_dir(
            context, f"{spec.name}-cascade-small", pair["small_model_dir"], framework="transformers",
            metrics={"cascade_" + spec.metric: pair["quality"], "deferral_rate": pair["deferral_rate"]},
            labels={"task": spec.name, "rung": pair["small_rung"], "base_model": pair["small"], "stage": "cascade"},
            parameters={"threshold": pair["threshold"], "big": pair["big"]})
        sel.save(selection)
    context.logger.info(sel.summary())
    reuse.done()
