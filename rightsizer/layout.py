"""Where a run's steps write under its artifact path: the one place that knows the layout.

::

    <root>/rightsizer/<task>/select/selection.json          the selection (select step)
    <root>/rightsizer/<task>/select/chosen/                  the chosen model, before quantization
    <root>/rightsizer/<task>/evaluate-<label>/evaluation.json
    <root>/rightsizer/<task>/evaluate-<label>/calibration_measurements.json  (on a catalog GPU)
    <root>/rightsizer/<task>/quantize-<method>/model/        GPTQ/AWQ checkpoint (quantize-gptq step)
    <root>/rightsizer/<task>/quantize-<method>/calibration.json
    <root>/rightsizer/<task>/finetune/production-<job id>/   the production adapter's run (finetune step)
    <root>/rightsizer/<task>/finetune/production.json        its scores and training figures
    <root>/rightsizer/<task>/quantize/bundle/                the serving bundle (rightsizer.json)
    <root>/rightsizer/<task>/size_gpu/decision.json          the task's decision record
    <root>/rightsizer/report/decisions.json                  all records (report step)
    <root>/rightsizer/report/decision_report.html            the run's report, one HTML page
    <root>/rightsizer/finetune/<key>-<job id>/               a finetune job's output folder

Beside the runs' folders (``<artifact path>/.rightsizer-steps``, ``rightsizer.stepcache``):
the finished steps by fingerprint (``steps/<step>/<fingerprint>.json``, reused by a rerun
with the same inputs) and the production fine-tuning jobs (``finetune/<task>/production-<job
id>/``, resumed by a rerun after a kill). A reused step's folder in a run is a symlink to the
run that made it.

Writers (the MLRun handlers in ``functions/``) and readers (re-evaluation, the demo script,
the notebook, tests) all go through :class:`RunLayout`. Its methods only compute paths;
creating folders is the writer's business. No MLRun import here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rightsizer.bundle import BUNDLE_FILE

NAMESPACE = "rightsizer"  # the folder under the artifact path that holds everything
REPORT_STEP = "report"
FINETUNE_STEP = "finetune"
PLAN_STEP = "plan"
# Folders beside the task folders: never tasks themselves.
NOT_TASKS = (REPORT_STEP, FINETUNE_STEP, PLAN_STEP)


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run under ``root`` (the artifact path, or a local work folder)."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def base(self) -> Path:
        """``<root>/rightsizer``: every step's folder is under it."""
        return self.root / NAMESPACE

    def step_dir(self, task: str, step: str) -> Path:
        """The working folder of ``step`` for ``task``."""
        return self.base / task / step

    def select_dir(self, task: str) -> Path:
        """The select step's folder (its work folder: adapters, the chosen model)."""
        return self.step_dir(task, "select")

    def selection_file(self, task: str) -> Path:
        """The saved :class:`~rightsizer.select.Selection`."""
        return self.select_dir(task) / "selection.json"

    def evaluate_dir(self, task: str, label: str) -> Path:
        """The evaluate step's folder for the model evaluated as ``label`` (chosen, baseline)."""
        return self.step_dir(task, f"evaluate-{label}")

    def evaluation_file(self, task: str, label: str) -> Path:
        """The evaluate step's report (quality and latency)."""
        return self.evaluate_dir(task, label) / "evaluation.json"

    def samples_file(self, task: str, label: str) -> Path:
        """The evaluate step's per-sample log: prompt as the model read it, answer, gold, score."""
        return self.evaluate_dir(task, label) / "samples.jsonl"

    def calibration_file(self, task: str, label: str) -> Path:
        """Prefill/decode measurements for the sizing engine (written on a catalog GPU only)."""
        return self.evaluate_dir(task, label) / "calibration_measurements.json"

    def prequant_dir(self, task: str, method: str) -> Path:
        """The quantize-gptq step's folder for ``method`` (gptq, awq)."""
        return self.step_dir(task, f"quantize-{method}")

    def prequant_model_dir(self, task: str, method: str) -> Path:
        """The pre-quantized checkpoint."""
        return self.prequant_dir(task, method) / "model"

    def calibration_texts_file(self, task: str, method: str) -> Path:
        """The calibration texts handed to the pre-quantization subprocess."""
        return self.prequant_dir(task, method) / "calibration.json"

    def finetune_task_dir(self, task: str) -> Path:
        """The finetune step's folder for ``task`` (its production adapter runs)."""
        return self.step_dir(task, FINETUNE_STEP)

    def production_file(self, task: str) -> Path:
        """The production adapter's summary: merged model, scores, training figures."""
        return self.finetune_task_dir(task) / "production.json"

    def quantize_dir(self, task: str) -> Path:
        """The quantize step's folder."""
        return self.step_dir(task, "quantize")

    def bundle_dir(self, task: str) -> Path:
        """The task's serving bundle (registered as the task's model)."""
        return self.quantize_dir(task) / "bundle"

    def size_gpu_dir(self, task: str) -> Path:
        """The size_gpu step's folder."""
        return self.step_dir(task, "size_gpu")

    def decision_file(self, task: str) -> Path:
        """The task's decision record."""
        return self.size_gpu_dir(task) / "decision.json"

    def report_dir(self) -> Path:
        """The report step's folder (one per run, not per task)."""
        return self.base / REPORT_STEP

    def decisions_file(self) -> Path:
        """All decision records of the run, with the serving endpoint."""
        return self.report_dir() / "decisions.json"

    def plan_dir(self) -> Path:
        """The fleet plan of the run (step ``plan``)."""
        return self.base / PLAN_STEP

    def plan_file(self) -> Path:
        """The fleet plan (``rightsizer.plan.FleetPlan.to_dict``, with its function specs)."""
        return self.plan_dir() / "fleet_plan.json"

    def decision_report_file(self) -> Path:
        """The run's decision report: one self-contained HTML page (report step)."""
        return self.report_dir() / "decision_report.html"

    def finetune_dir(self, name: str) -> Path:
        """A finetune job's output folder (checkpoints, adapter, result)."""
        return self.base / FINETUNE_STEP / name

    def tasks(self) -> list[str]:
        """Names of the tasks that have a folder here, sorted."""
        if not self.base.is_dir():
            return []
        return sorted(p.name for p in self.base.iterdir()
                      if p.is_dir() and p.name not in NOT_TASKS and not p.name.startswith("."))


def latest_run(root: str | Path) -> Path:
    """The run under artifact folder ``root`` that finished last: ``root`` itself when it holds
    a run's layout (an explicit ``artifact_path``), or the newest ``<root>/<run id>/`` that does
    (where a bare ``project.run("size_and_deploy")`` writes). ``root`` when none does (the
    caller then says what it did not find). Newest: its report's ``decisions.json``, else its
    ``rightsizer`` folder, by modification time."""
    root = Path(root)
    if not root.is_dir():
        return root
    candidates = [root, *(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))]
    runs = [c for c in candidates if RunLayout(c).tasks()]
    if not runs:
        return root

    def finished(run: Path) -> float:
        layout = RunLayout(run)
        marker = layout.decisions_file() if layout.decisions_file().is_file() else layout.base
        return marker.stat().st_mtime

    return max(runs, key=finished)


def run_app(root: str | Path) -> str | None:
    """The application spec the latest run under ``root`` sized (its report's ``app``), if it says."""
    import json

    path = RunLayout(latest_run(root)).decisions_file()
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("app") or None


def find_bundles(root: str | Path) -> dict[str, Path]:
    """The serving bundles under artifact path ``root``, by task (complete ones only)."""
    layout = RunLayout(Path(root))
    return {t: layout.bundle_dir(t) for t in layout.tasks()
            if (layout.bundle_dir(t) / BUNDLE_FILE).is_file()}


def find_decisions(root: str | Path) -> dict[str, Path]:
    """The per-task decision records under artifact path ``root``, by task."""
    layout = RunLayout(Path(root))
    return {t: layout.decision_file(t) for t in layout.tasks() if layout.decision_file(t).is_file()}
