"""The Jupyter walk-through runs top to bottom (it runs the workflow and queries serving)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from rightsizer.layout import RunLayout

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_notebook_executes(demo_models, tmp_path, monkeypatch):
    monkeypatch.setenv("RIGHTSIZER_ARTIFACTS", str(tmp_path / "artifacts"))
    nb = nbformat.read(ROOT / "notebooks" / "size_and_deploy.ipynb", as_version=4)
    NotebookClient(nb, timeout=1200, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                        for o in c.get("outputs", []))
    assert "ticket_routing -> {" in outputs and "'label': 'billing'" in outputs
    assert "review_sentiment -> {" in outputs
    # the extraction task answers with its parsed fields (the message names a "notebook")
    assert "order_extraction -> {" in outputs and "'order_id': '#48213'" in outputs
    assert "'product': 'laptop'" in outputs and "'issue': 'damaged'" in outputs
    assert "malformed 0.0%" in outputs
    assert RunLayout(tmp_path / "artifacts").decisions_file().is_file()
