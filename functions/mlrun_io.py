"""Shared MLRun plumbing for the step handlers: where to write, how to log tables/plots,
and how to bring a model folder produced by an earlier step (maybe in another pod) here."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import mlrun
import pandas as pd
from mlrun.artifacts import PlotlyArtifact

from rightsizer.layout import RunLayout
from rightsizer.display import json_cells
from rightsizer.stepcache import StepCache, fingerprint, link_dirs, unmark_dirs


def run_layout(context: mlrun.MLClientCtx) -> RunLayout:
    """This run's layout (``rightsizer.layout``), rooted where the steps can write locally:
    the artifact path when it is local."""
    base = context.artifact_path or ""
    if not base or "://" in base:  # remote artifact store: work locally, upload by logging
        base = os.environ.get("RIGHTSIZER_WORKDIR", tempfile.gettempdir())
    return RunLayout(Path(base))


def made_dir(path: Path) -> Path:
    """``path``, a folder, created with its parents."""
    path.mkdir(parents=True, exist_ok=True)
    return path


def made_parent(path: Path) -> Path:
    """``path`` (a file or folder about to be written) with its parent folder created."""
    made_dir(path.parent)
    return path


def log_table(context: mlrun.MLClientCtx, key: str, rows: list[dict]) -> None:
    """A CSV table artifact; dict and list cells are written as JSON (not Python repr)."""
    with warnings.catch_warnings():
        # MLRun's preview statistics histogram a bool column (passed, meets_bar) through numpy,
        # which warns that it converts it to uint8; the CSV keeps True / False
        warnings.filterwarnings("ignore", message="Converting input from bool", category=RuntimeWarning)
        context.log_dataset(key, df=pd.DataFrame(json_cells(rows)), format="csv", index=False)


RESULT_DIGITS = 6  # significant digits of a float result: a score k/n stays exact, a timing loses its noise


def readable(results: dict) -> dict:
    """Run results as the MLRun UI and the workflow's printout show them: each float (also in a
    list or dict) to ``RESULT_DIGITS`` significant digits, not a timer's 16."""
    def one(v):
        if isinstance(v, float) and v == v and abs(v) != float("inf"):
            return float(f"{v:.{RESULT_DIGITS}g}")
        if isinstance(v, dict):
            return {k: one(x) for k, x in v.items()}
        if isinstance(v, list):
            return [one(x) for x in v]
        return v
    return {k: one(v) for k, v in results.items()}


def log_results(context: mlrun.MLClientCtx, results: dict) -> None:
    """``context.log_results`` with ``readable`` values."""
    context.log_results(readable(results))


def log_plot(context: mlrun.MLClientCtx, key: str, figure) -> None:
    context.log_artifact(PlotlyArtifact(key=key, figure=figure))


MODEL_FILE = "model.safetensors"


def has_api() -> bool:
    """Whether an MLRun API (run DB) is configured; without one MLRun runs offline (NopDB).

    ``mlconf.dbpath`` alone does not tell: MLRun sets it to './' once a NopDB is in use.
    """
    from mlrun.db.nopdb import NopDB

    return bool(mlrun.mlconf.dbpath) and not isinstance(mlrun.get_run_db(), NopDB)


def label_model(model_uri: str, labels: dict[str, str]) -> bool:
    """Add ``labels`` to a registered model (``store://models/...``) where an MLRun API keeps it,
    as a flagged re-evaluation does (``regression=true``); False when there is none to label
    (a local run, no API)."""
    if not (mlrun.datastore.is_store_uri(model_uri) and has_api()):
        return False
    _, artifact, _ = mlrun.artifacts.get_model(model_uri)
    artifact.metadata.labels.update(labels)
    mlrun.get_run_db().store_artifact(artifact.spec.db_key, artifact.to_dict(), project=artifact.metadata.project)
    return True


def registered_model(project: str, task: str) -> str:
    """The store URI a task's model is registered under (the quantize step's ``log_model``)."""
    return f"store://models/{project}/{task}"


def log_model_dir(context: mlrun.MLClientCtx, key: str, model_dir: str | Path, **kwargs) -> str:
    """Register a saved-model folder as a model artifact; returns how later steps reach it.

    MLRun model artifacts hold one model file plus extra files: the weights are the model
    file and every other file of the folder (config, tokenizer, rightsizer.json) is extra
    data. The returned reference is the store URI where an MLRun API keeps artifacts, and
    the local folder on a local run without one (store URIs need the DB to resolve).
    """
    model_dir = Path(model_dir)
    extra = {f.name: str(f) for f in sorted(model_dir.iterdir()) if f.is_file() and f.name != MODEL_FILE}
    artifact = context.log_model(key, model_dir=str(model_dir), model_file=MODEL_FILE,
                                 extra_data=extra, **kwargs)
    return artifact.uri if has_api() else str(model_dir)


def localize_dir(ref: str, dest: str | Path | None = None) -> str:
    """A local folder for a model reference: a local path, or a store:// model URI."""
    if Path(ref).is_dir():
        return ref
    if not mlrun.datastore.is_store_uri(ref):
        raise FileNotFoundError(f"model reference {ref!r}: no such folder and not a store:// URI")
    model_file, _, extra = mlrun.artifacts.get_model(ref)
    dest = Path(dest or tempfile.mkdtemp(prefix="rightsizer-"))
    mlrun.get_dataitem(model_file).download(str(dest / MODEL_FILE))
    for name, item in extra.items():
        item.download(str(dest / name))
    return str(dest)


def project_file(path: str) -> str:
    """A project-relative path (task specs) as seen from here: cwd first, then the project."""
    if os.path.isabs(path) or os.path.exists(path):
        return path
    project = mlrun.get_current_project(silent=True)
    if project is not None and os.path.exists(os.path.join(project.context, path)):
        return os.path.join(project.context, path)
    return path  # let the loader report it as missing


LOCAL_URL = "http://127.0.0.1:8080"  # where scripts/serve.sh listens by default


def callable_endpoint(context: mlrun.MLClientCtx, endpoint: str) -> tuple[str, str]:
    """``(url, serve_command)`` for a deploy's ``endpoint``: a cluster deploy's URL as it is; a
    mock deploy (offline, the endpoint is a function name) is served by ``scripts/serve.sh``
    on this run's artifacts, at ``LOCAL_URL`` once that command runs."""
    if not endpoint:
        return "", ""
    if "://" in endpoint:
        return endpoint, ""
    return LOCAL_URL, f"bash scripts/serve.sh --artifacts {run_layout(context).root}"


def app_of_run(models: str) -> str | None:
    """The application spec a local run sized (``rightsizer.layout.run_app``), for a workflow
    given that run's artifact folder (or a folder of runs) as ``models``; None otherwise."""
    if not isinstance(models, str) or not models or mlrun.datastore.is_store_uri(models):
        return None
    from rightsizer.layout import run_app

    return run_app(project_file(models))


def current_project(context: mlrun.MLClientCtx):
    """The run's project: from the MLRun API on a cluster; offline (no API, where
    ``get_project_object`` finds nothing) the project the local workflow runs in."""
    return context.get_project_object() or mlrun.get_current_project(silent=True)


def serving_engine_param(project) -> str:
    """The project's ``serving_engine`` param (whose host costs the sizing uses); "" when unset."""
    return str(project.get_param("serving_engine", "") or "") if project else ""


STEPS_DIR_ENV = "RIGHTSIZER_STEPS_DIR"
STEPS_FOLDER = ".rightsizer-steps"


def step_cache(context: mlrun.MLClientCtx) -> StepCache | None:
    """Where finished steps are remembered across runs (``rightsizer.stepcache``).

    ``$RIGHTSIZER_STEPS_DIR`` when set (empty: off). Otherwise beside the runs' folders: a
    local artifact path ``<path>/<workflow id>`` (MLRun's per-workflow folder) gives
    ``<path>/.rightsizer-steps``. With a remote artifact store the steps work in
    ``$RIGHTSIZER_WORKDIR`` (a shared volume on a cluster) and remember there; without it
    (each pod has its own temporary folder) nothing is remembered.
    """
    env = os.environ.get(STEPS_DIR_ENV)
    if env is not None:
        return StepCache(Path(env)) if env.strip() else None
    base = context.artifact_path or ""
    if not base or "://" in base:
        workdir = os.environ.get("RIGHTSIZER_WORKDIR")
        return StepCache(Path(workdir) / STEPS_FOLDER) if workdir else None
    root = Path(base)
    if root.name in (context.tag, context.uid):  # the run's own folder: remember beside it
        root = root.parent
    return StepCache(root / STEPS_FOLDER)


class Reusable:
    """One step's reuse: ``hit()`` links an earlier finished run of it and logs its results;
    after a run, ``done()`` remembers it. See :func:`reusable`."""

    def __init__(self, context: mlrun.MLClientCtx, step: str, inputs: dict, dirs: list[Path]):
        self.context, self.step, self.dirs = context, step, [Path(d) for d in dirs]
        self.cache = step_cache(context)
        self.fingerprint = fingerprint(step, inputs) if self.cache is not None else ""

    def hit(self) -> bool:
        """Whether the step finished before with the same fingerprint; if so its folders are
        linked into this run's layout and its results logged (``reused_from``: that run)."""
        if self.cache is None:
            return False
        entry = self.cache.lookup(self.step, self.fingerprint) if _reuse_enabled(self.context) else None
        if entry is None:
            unmark_dirs(self.dirs)  # the step runs here now: its folders are no longer the old result
            return False
        link_dirs(entry, self.dirs)
        log_results(self.context, {**entry["results"], "reused_from": entry["run"]})
        self.context.logger.info(f"{self.context.name}: reused the finished step of run {entry['run']} "
                                 f"(same inputs, fingerprint {self.fingerprint[:12]})")
        return True

    def done(self) -> None:
        """Remember this run of the step (call it last: after every output is written)."""
        if self.cache is not None:
            self.cache.record(self.step, self.fingerprint, self.dirs, self.context.results,
                              run=self.context.tag)


def reusable(context: mlrun.MLClientCtx, step: str, inputs: dict, dirs: list[Path]) -> Reusable:
    """A step handler's reuse of an earlier finished run with the same inputs::

        reuse = reusable(context, "quantize", {"task": spec, ...}, [layout.quantize_dir(task)])
        if reuse.hit():
            return
        ...  # the step's work, writing only under ``dirs``
        reuse.done()

    ``inputs``: everything the step's results depend on besides the code (the task spec, its
    parameters, files it reads from the run's layout); ``dirs``: the folders it writes.
    The project parameter ``reuse_steps`` (default true) turns the lookup off; finished
    steps are still remembered.
    """
    return Reusable(context, step, inputs, dirs)


def if_file(path: Path) -> str:
    """``path`` when it is a file, "" otherwise: an optional input (one a step reads from the
    run's layout, such as the production adapter's summary) whose content counts."""
    return str(path) if path.is_file() else ""


def _reuse_enabled(context: mlrun.MLClientCtx) -> bool:
    project = current_project(context)
    value = project.get_param("reuse_steps", True) if project is not None else True
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"project param reuse_steps: {value!r}; expected true or false")
        return value.lower() == "true"
    return bool(value)
