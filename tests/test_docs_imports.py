"""The docs' import blocks import: a doc that names a function where it is not fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def _import_blocks() -> list[tuple[str, str]]:
    """Every ```python block of the README and docs/ whose statements are all imports."""
    out = []
    for doc in sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")]):
        for i, block in enumerate(BLOCK.findall(doc.read_text())):
            try:
                tree = ast.parse(block)
            except SyntaxError:  # a fragment, not a program
                continue
            if tree.body and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body):
                out.append((f"{doc.relative_to(ROOT)}#{i}", block))
    return out


BLOCKS = _import_blocks()


def test_there_are_import_blocks_to_check():
    assert any(name.startswith("docs/finetune.md") for name, _ in BLOCKS)


@pytest.mark.parametrize("name, code", BLOCKS, ids=[n for n, _ in BLOCKS])
def test_a_docs_import_block_imports(name, code):
    exec(compile(code, name, "exec"), {})


def test_every_path_the_map_of_the_code_names_exists():
    """docs/where-things-live.md names the one file of each concept: a file that moved or
    went away fails here (``module.name`` refers to a name in a module)."""
    text = (ROOT / "docs" / "where-things-live.md").read_text()
    paths = set(re.findall(r"`((?:rightsizer|tests|functions|scripts|benchmarks|pipelines)/[^`* <]+)`", text))
    assert len(paths) > 60
    missing = []
    for ref in sorted(paths):
        path = ROOT / ref.rstrip("/")
        if not path.exists() and not (ROOT / (ref.rsplit(".", 1)[0] + ".py")).is_file():
            missing.append(ref)
    assert missing == []
