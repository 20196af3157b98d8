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
from rightsizer.report import json_cells


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


def log_plot(context: mlrun.MLClientCtx, key: str, figure) -> None:
    context.log_artifact(PlotlyArtifact(key=key, figure=figure))


MODEL_FILE = "model.safetensors"


def has_api() -> bool:
    """Whether an MLRun API (run DB) is configured; without one MLRun runs offline (NopDB).

    ``mlconf.dbpath`` alone does not tell: MLRun sets it to './' once a NopDB is in use.
    """
    from mlrun.db.nopdb import NopDB

    return bool(mlrun.mlconf.dbpath) and not isinstance(mlrun.get_run_db(), NopDB)


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


def current_project(context: mlrun.MLClientCtx):
    """The run's project: from the MLRun API on a cluster; offline (no API, where
    ``get_project_object`` finds nothing) the project the local workflow runs in."""
    return context.get_project_object() or mlrun.get_current_project(silent=True)
