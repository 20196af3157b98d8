"""The serving engine a deployment runs, and the one its sizing assumed (named in the decision
record and the fleet plan, so neither claims more than the factors behind it)."""

from __future__ import annotations

SERVING_ENGINE = "rightsizer continuous batching (transformers ContinuousBatchingManager)"


def serving_engine(mode: str, factors=None) -> dict:
    """``deployed``: this project's engine; ``sized_with``: what the efficiency factors were
    fitted to: vLLM and TensorRT-LLM public measurements, unless this engine's own
    measurements calibrated them (``mode`` "calibrated": the evaluate step's latencies on a
    catalog GPU). ``host_costs_of``: whose host costs (per step, per request) the GPU
    estimates include (``Factors.for_engine``; the project's ``serving_engine`` param)."""
    assumed = ("this engine's measurements on the sized GPU (calibrated)" if mode == "calibrated" else
               "vLLM/TensorRT-LLM-like factors (fitted to their public measurements; not yet to this engine's)")
    host = getattr(factors, "host_engine", "") or "packaged defaults"
    from rightsizer.sizing.calibration import HOST_COSTS

    costs = {k: getattr(factors, k) for k in HOST_COSTS} if factors is not None else None
    return {"deployed": SERVING_ENGINE, "sized_with": assumed, "sizing_mode": mode,
            "host_costs_of": host, "host_costs": costs}
