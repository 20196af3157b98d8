"""Measured GEMM efficiency per GPU, dtype and token count, from aiconfigurator's operator tables.

``rightsizer/data/operator_efficiency.yaml`` is generated from NVIDIA aiconfigurator's measured
TensorRT-LLM GEMM tables (``scripts/extract_aic_efficiency.py``, Apache-2.0 data): for each
system and GEMM dtype, the achieved share of the datasheet peak at M = 1 ... 8192 tokens
(median over LLM-sized shapes). Where a catalog GPU has such a table, an estimate times its GEMMs
from it (mode ``operator-data``) instead of the fitted roofline factors; every other op, and
every other GPU, keeps the factors.
"""

from __future__ import annotations

import bisect
import math
from functools import lru_cache
from pathlib import Path

import yaml

DATA = Path(__file__).resolve().parent.parent / "data" / "operator_efficiency.yaml"

# aiconfigurator system -> catalog GPU (only the same part: the A100-40GB has other bandwidth)
SYSTEMS = {"a100_sxm": "A100-80GB", "h100_sxm": "H100-SXM", "h200_sxm": "H200", "l40s": "L40S"}
# precision name (rightsizer.precisions) -> table dtype
DTYPES = {"bf16": "bfloat16", "fp16": "bfloat16", "fp8": "fp8", "int8": "int8_wo", "int4": "int4_wo"}

GemmTable = tuple[tuple[float, ...], tuple[float, ...]]  # (log M, share of peak)


@lru_cache(maxsize=4)
def _tables(path: str) -> dict[tuple[str, str], GemmTable]:
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    ms = [math.log(m) for m in data["m"]]
    out: dict[tuple[str, str], GemmTable] = {}
    for system, entry in (data.get("systems") or {}).items():
        gpu = SYSTEMS.get(system)
        if gpu is None:
            continue
        for dtype, curve in (entry.get("gemm") or {}).items():
            pts = [(x, float(c)) for x, c in zip(ms, curve.get("compute") or []) if c]
            if len(pts) >= 2:
                out[(gpu, dtype)] = (tuple(p[0] for p in pts), tuple(p[1] for p in pts))
    return out


def gemm_table(gpu: str, precision: str, path: str | Path = DATA) -> GemmTable | None:
    """The measured GEMM curve of a catalog GPU for weights of ``precision`` (``int4-g32`` counts as
    int4), or None where aiconfigurator has none."""
    key = "int4" if precision.startswith("int4") else precision
    dtype = DTYPES.get(key)
    if dtype is None or not Path(path).exists():
        return None
    return _tables(str(path)).get((gpu, dtype))


def share_of_peak(table: GemmTable, tokens: float) -> float:
    """Interpolated (in log M) share of peak FLOP/s a GEMM of ``tokens`` rows reaches; clamped at the
    table's ends."""
    xs, ys = table
    x = math.log(max(tokens, 1e-9))
    if x <= xs[0]:
        return ys[0] * math.exp(x - xs[0])  # below M=1 (fractional averages): time stays that of M=1
    if x >= xs[-1]:
        return ys[-1]
    i = bisect.bisect_right(xs, x)
    t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
    return ys[i - 1] + t * (ys[i] - ys[i - 1])


__all__ = ["DATA", "DTYPES", "SYSTEMS", "GemmTable", "gemm_table", "share_of_peak"]
