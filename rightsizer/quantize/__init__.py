"""Quantization and inference optimization: the lowest precision that keeps task quality.

Public API (used by the pipeline's quantize step and by serving)::

    available_backends, quantize_model, apply_quant_config,
    search_precision, precision_figure, weight_bytes

plus placement (``plan_placement``; ``rightsizer.inference.load_model`` loads with a plan), attention choice
(``choose_attention``) and GPTQ checkpoints (``load_gptq_model``, ``PreQuantized`` for the
search). No MLRun import here: the MLRun handlers live in ``functions/``. The precisions,
their order and the ``quant_config`` writer are in ``rightsizer.precisions``.
"""

from rightsizer.quantize.backends import (
    BACKENDS, QuantInfo, apply_quant_config, available_backends, backend_status,
    quantize_model, sensitive_modules, weight_bytes,
)
from rightsizer.quantize.search import (
    PrecisionSearch, PrecisionTrial, PreQuantized, decode_speed_fn, precision_figure, search_precision,
)
from rightsizer.quantize.gptq_format import load_gptq_model
from rightsizer.quantize.attention import AttentionChoice, choose_attention
from rightsizer.quantize.placement import PlacementPlan, plan_placement

__all__ = [
    "AttentionChoice", "PlacementPlan", "PreQuantized", "choose_attention", "load_gptq_model",
    "plan_placement",
    "BACKENDS", "PrecisionSearch", "PrecisionTrial", "QuantInfo", "apply_quant_config",
    "available_backends", "backend_status", "decode_speed_fn", "precision_figure", "quantize_model", "search_precision",
    "sensitive_modules", "weight_bytes",
]
