"""This machine as a CPU device: a micro-benchmark of its memory bandwidth and FLOP/s.

``measure_local_cpu()`` returns a catalog entry named ``cpu-local`` (the fields of a
``cpus`` entry in ``rightsizer/data/gpus.yaml``) measured with torch: streaming copy
bandwidth, fp32 and bf16 matmul FLOP/s on the threads torch uses. Add it with
``load_catalog(extra=[entry])`` and give it a price to plan onto it; calibrate the
estimator on it with ``fit_calibration`` (measurements with ``"gpu": "cpu-local"``), as
``benchmarks/bench_cpu_estimate.py`` does against measured decode latency.
"""

from __future__ import annotations

import os
import time
from typing import Any

LOCAL = "cpu-local"


def _best_seconds(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_bandwidth(mib: int = 256, repeat: int = 5) -> float:
    """Bytes/s of a large tensor copy (read + write), the best of ``repeat``."""
    import torch

    n = mib * 2**20 // 4
    src = torch.ones(n, dtype=torch.float32)
    dst = torch.empty_like(src)
    s = _best_seconds(lambda: dst.copy_(src), repeat)
    return 2 * src.numel() * src.element_size() / s


def measure_flops(dtype: str = "fp32", size: int = 1024, repeat: int = 5) -> float:
    """FLOP/s of a square matmul at ``dtype`` ("fp32" or "bf16"), the best of ``repeat``."""
    import torch

    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(size, size).to(dt)
    b = torch.randn(size, size).to(dt)
    s = _best_seconds(lambda: torch.mm(a, b), repeat)
    return 2 * size**3 / s


def _ram_bytes() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def measure_local_cpu(quick: bool = True) -> dict[str, Any]:
    """A ``cpus`` catalog entry for this machine (``cpu-local``), measured here with torch."""
    import torch

    size = 768 if quick else 2048
    fp32 = measure_flops("fp32", size)
    bf16 = measure_flops("bf16", size)
    return {"name": LOCAL, "vendor": "local", "vcpus": int(torch.get_num_threads()), "memory_bytes": _ram_bytes(),
            "memory_bandwidth": measure_bandwidth(128 if quick else 512), "fp32_flops": fp32,
            # bf16 slower than fp32 (no native bf16 units): the engine then uses the fp32 rate
            "bf16_flops": bf16 if bf16 > fp32 else 0,
            "spec_source": "measured here: rightsizer.sizing.cpu.measure_local_cpu (torch copy and matmul)",
            "notes": f"torch {torch.__version__}, {torch.get_num_threads()} threads"}


__all__ = ["measure_local_cpu", "measure_bandwidth", "measure_flops", "LOCAL"]
