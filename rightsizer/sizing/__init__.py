"""GPU sizing engine: parameters, memory, per-phase roofline, catalog and recommendation.

Public API::

    count_params(config) -> ParamCount(total, active)
    load_catalog(path=None, extra=None, price_list="aws-on-demand-us-east-1") -> Catalog
    load_price_list(name_or_path) -> PriceList ; available_price_lists() -> [names]
    Workload(prompt_tokens, output_tokens, batch=1, precision="bf16", kv_precision=None)
    SLO(ttft_ms, tpot_ms, throughput_tokens_per_s=0.0, budget_per_hour=None)
    estimate(config, gpu, workload, count=1, mig=None, factors=None) -> Estimate
    recommend(config, workload, slo, catalog=None, precisions=None) -> Recommendation
    roofline_figure(estimates_or_recommendation) -> plotly Figure
    fit_calibration(measurements) -> Factors ; Factors.save(path) / Factors.load(path)

Precisions (bytes per weight, compute dtype, GPU feature) are the table in
``rightsizer.precisions``; ``get_precision`` and ``Precision`` are re-exported from there.

See docs/sizing.md for the model, its sources and its measured accuracy.
"""

from rightsizer.precisions import Precision, get_precision
from rightsizer.sizing.calibration import MODES, Factors, GpuFactors, fit_calibration
from rightsizer.sizing.catalog import GPU, Catalog, MigProfile, default_catalog, load_catalog
from rightsizer.sizing.estimate import Estimate, Workload, estimate
from rightsizer.sizing.memory import activation_bytes, kv_bytes_per_sequence, kv_bytes_per_token, weights_bytes
from rightsizer.sizing.params import SUPPORTED_ARCHITECTURES, ModelSpec, ParamCount, count_params, model_spec
from rightsizer.sizing.plots import roofline_figure
from rightsizer.sizing.prices import DEFAULT_PRICE_LIST, PriceList, available_price_lists, load_price_list
from rightsizer.sizing.recommend import SLO, Option, Recommendation, Traffic, recommend

__all__ = [
    "count_params", "model_spec", "ModelSpec", "ParamCount", "SUPPORTED_ARCHITECTURES",
    "load_catalog", "default_catalog", "Catalog", "GPU", "MigProfile",
    "Workload", "SLO", "Estimate", "estimate", "recommend", "Recommendation", "Option", "Traffic",
    "roofline_figure", "Factors", "GpuFactors", "fit_calibration", "MODES",
    "weights_bytes", "kv_bytes_per_token", "kv_bytes_per_sequence", "activation_bytes", "get_precision",
    "Precision", "load_price_list", "available_price_lists", "PriceList", "DEFAULT_PRICE_LIST",
]
