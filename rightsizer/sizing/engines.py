"""The serving engine a deployment runs, and the one its sizing assumed (named in the decision
record and the fleet plan, so neither claims more than the factors behind it)."""

from __future__ import annotations

SERVING_ENGINE = "rightsizer continuous batching (transformers ContinuousBatchingManager)"


def serving_engine(mode: str) -> dict:
    """``deployed``: this project's engine; ``sized_with``: what the efficiency factors were
    fitted to: vLLM and TensorRT-LLM public measurements, unless this engine's own
    measurements calibrated them (``mode`` "calibrated": the evaluate step's latencies on a
    catalog GPU)."""
    assumed = ("this engine's measurements on the sized GPU (calibrated)" if mode == "calibrated" else
               "vLLM/TensorRT-LLM-like factors (fitted to their public measurements; not yet to this engine's)")
    return {"deployed": SERVING_ENGINE, "sized_with": assumed, "sizing_mode": mode}
