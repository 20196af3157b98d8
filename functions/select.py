"""MLRun step ``select``: the smallest candidate and cheapest rung that pass the task's bar."""

from __future__ import annotations

import mlrun

from functions.mlrun_io import project_file, log_plot, log_table, step_dir
from rightsizer.errors import NoFeasibleOption
from rightsizer.report import ladder_figure, leaderboard_rows
from rightsizer.select import select_model
from rightsizer.taskspec import load_task


def select(context: mlrun.MLClientCtx, task_spec: str) -> None:
    """Run the selection ladder for one task spec (YAML path).

    Logs: ``leaderboard`` (table), ``ladder`` (Plotly), results ``chosen_model``, ``rung``,
    ``score``, ``model_dir`` (the chosen model, LoRA merged) and ``selection`` (JSON path).
    """
    spec = load_task(project_file(task_spec))
    work = step_dir(context, spec.name, "select")
    sel = select_model(spec, work)
    sel.save(work / "selection.json")
    log_table(context, "leaderboard", leaderboard_rows(sel))
    log_plot(context, "ladder", ladder_figure(sel))
    context.log_result("selection", str(work / "selection.json"))
    context.log_results({"eval_examples": sel.eval_examples,
                         "baseline_model": sel.order[-1][0]})
    if not sel.passed:
        raise NoFeasibleOption(sel.summary())
    context.log_results({"chosen_model": sel.chosen.candidate, "rung": sel.chosen.rung,
                         "score": sel.chosen.score, "params": sel.chosen.params,
                         "model_dir": sel.model_dir})
    context.logger.info(sel.summary())
