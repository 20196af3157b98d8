"""Where a spec's data may live: the project (the folder with project.yaml at or above the
spec) and the folders listed in ``$RIGHTSIZER_DATA_ROOTS``. The one home of path
confinement: the dataset loader (``rightsizer.evaluate``) and the knowledge-source check use it.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOTS_ENV = "RIGHTSIZER_DATA_ROOTS"


def data_roots() -> list[Path]:
    """The folders besides the project that data paths (dataset splits, knowledge sources)
    may point into: the user lists them in ``$RIGHTSIZER_DATA_ROOTS`` (separated by
    ``os.pathsep``), resolved."""
    raw = os.environ.get(DATA_ROOTS_ENV, "")
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def project_root(folder: Path) -> Path:
    """The project a spec belongs to: the nearest folder at or above it with a project.yaml
    (the MLRun project), else the spec's own folder."""
    for d in (folder, *folder.parents):
        if (d / "project.yaml").is_file():
            return d
    return folder


def within_roots(path: Path, roots: list[Path]) -> bool:
    """Whether ``path`` (resolved) is one of ``roots`` or inside one of them."""
    where = path.resolve()
    return any(where == r or r in where.parents for r in roots)




def allowed_roots(base_dir: str) -> list[Path]:
    """The folders a spec in ``base_dir`` may read data from: its project, then the data roots."""
    return [project_root(Path(base_dir or ".").resolve()), *data_roots()]
