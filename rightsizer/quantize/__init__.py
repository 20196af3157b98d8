"""The ``quantize`` step: the lowest precision that keeps a task's quality.

``quantize_for_task`` (``step.py``) runs the precision search (``search.py``) on the
selected model with the evaluation harness as the quality check and writes the serving
bundle. The backends it searches over live in ``rightsizer.runtime``; the GPTQ step
(``quantize-gptq``) in ``rightsizer.quantize_gptq``. No MLRun import here: the MLRun
handler is ``functions/quantize.py``.
"""

from rightsizer.quantize.search import (
    PrecisionSearch, PrecisionTrial, PreQuantized, decode_speed_fn, precision_figure, search_precision,
)
from rightsizer.quantize.step import QuantizeOutcome, quantize_for_task

__all__ = ["PrecisionSearch", "PrecisionTrial", "PreQuantized", "QuantizeOutcome", "decode_speed_fn",
           "precision_figure", "quantize_for_task", "search_precision"]
