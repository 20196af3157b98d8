"""What the steps' charts and tables share: one palette (chosen, baseline, a missed bar,
the bar itself, the ladder's rungs), numbers rounded to what a reader compares, and table
cells that a CSV can hold."""

from __future__ import annotations

import json
from typing import Any

from rightsizer.schema.check import is_number

CHOSEN, BASELINE, FAIL, BAR, FADED = "#2a9d8f", "#e76f51", "#d62728", "#b8860b", "#9e9e9e"
CASCADE = "#6d597a"  # a confidence cascade (small model first, the chosen one below its threshold)
RUNG_COLORS = ("#457b9d", "#8d99ae", "#2a9d8f", "#e9c46a", "#6d597a")


def finite(x: Any) -> bool:
    """Whether ``x`` is a real, finite number (not a bool, None, NaN or infinity)."""
    return is_number(x, finite=True)


def rounded(x: Any, digits: int) -> float | None:
    """``x`` rounded to ``digits``, or None when it is not :func:`finite` (an unservable
    option's infinite cost is an empty cell, not ``inf``)."""
    return round(x, digits) if finite(x) else None


def json_cells(rows: list[dict]) -> list[dict]:
    """Rows with every dict or list cell written as JSON (a CSV cell of Python repr cannot be
    read back by anything but Python)."""
    return [{k: json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list, tuple)) else v
             for k, v in r.items()} for r in rows]
