"""How a model runs efficiently: quantization backends, int4 packing, GPTQ checkpoints,
attention choice and device placement.

The inference core (``rightsizer.inference``) loads every model through these; the quantize
step (``rightsizer.quantize``) searches over the backends. This package depends on neither,
so both can use it without an import cycle. The precisions themselves, their order and the
``quant_config`` writer are in ``rightsizer.precisions``.
"""

from rightsizer.runtime.attention import AttentionChoice, choose_attention
from rightsizer.runtime.backends import (
    BACKENDS, QuantInfo, apply_quant_config, available_backends, backend_status, quantize_model,
    sensitive_modules, weight_bytes,
)
from rightsizer.runtime.gptq_format import load_gptq_model
from rightsizer.runtime.placement import PlacementPlan, plan_placement

__all__ = [
    "AttentionChoice", "BACKENDS", "PlacementPlan", "QuantInfo", "apply_quant_config",
    "available_backends", "backend_status", "choose_attention", "load_gptq_model",
    "plan_placement", "quantize_model", "sensitive_modules", "weight_bytes",
]
