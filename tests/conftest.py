"""Shared fixtures: the demo candidates (built once per machine, cached) and task specs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "tasks"

# Keep MLRun offline and quiet in tests: no API server, local artifacts only.
os.environ.pop("MLRUN_DBPATH", None)
# Tests write their data files under the temporary folder, outside the project: list it as a
# data root, as a user lists theirs (tests of the rule itself set the variable themselves).
os.environ.setdefault("RIGHTSIZER_DATA_ROOTS", tempfile.gettempdir())


@pytest.fixture(scope="session")
def demo_models() -> Path:
    """Folder of the tiny demo candidates (tiny-s < tiny-m < tiny-l)."""
    from rightsizer.demo.bootstrap import bootstrap

    return bootstrap(verbose=False)


@pytest.fixture()
def sentiment_spec():
    from rightsizer.taskspec import load_task

    return load_task(TASKS / "review_sentiment.yaml")


@pytest.fixture()
def routing_spec():
    from rightsizer.taskspec import load_task

    return load_task(TASKS / "ticket_routing.yaml")


_DIST_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture(autouse=True)
def _no_distributed_env_leak():
    """A test that leaves RANK/WORLD_SIZE behind makes later Accelerate runs (and the
    notebook's kernel, which inherits the environment) expect a multi-node launch."""
    before = {k: os.environ.get(k) for k in _DIST_ENV}
    yield
    after = {k: os.environ.get(k) for k in _DIST_ENV}
    assert after == before, f"the test changed distributed env vars: {before} -> {after}"
