"""Feed the evaluate step's measured latencies into the sizing engine's calibration.

A latency measured on a catalog GPU (time to first token and per output token, at several
batch sizes) becomes prefill and decode measurements with the FLOPs and bytes the sizing
engine computes for that same workload; ``rightsizer.sizing.fit_calibration`` fits the
efficiency factors from them, and later estimates on that GPU say "calibrated".
Measurements taken on a CPU or on a GPU the catalog does not know are not used.
"""

from __future__ import annotations

import json
from pathlib import Path

from rightsizer.errors import ConfigError
from rightsizer.runtime.target import catalog_device
from rightsizer.sizing import Workload, estimate
from rightsizer.sizing.params import model_spec


def catalog_gpu(device_name: str, catalog=None) -> str | None:
    """The catalog name of a device as torch reports it ("NVIDIA H200" -> "H200"; a MIG slice,
    "NVIDIA A100-SXM4-40GB MIG 1g.10gb" -> "A100-40GB MIG 1g.10gb"), or None."""
    entry = catalog_device(device_name, catalog)
    return entry.label if entry is not None else None


def measurements_from_latency(config, latency_rows: list[dict], precision: str = "bf16",
                              catalog=None) -> list[dict]:
    """Calibration measurements (``fit_calibration`` input) from ``measure_latency`` rows.

    A row measured on a MIG slice is estimated with the slice's compute and bandwidth and
    calibrates its GPU (the efficiency of the kernels, not the slice's size, is what is fitted)."""
    out = []
    layers = model_spec(config).layers  # lets the fit learn a host cost per layer (eager frameworks)
    for row in latency_rows:
        device = catalog_device(row["device"], catalog)
        if device is None:
            continue
        wl = Workload(prompt_tokens=int(row["prompt_tokens"]), output_tokens=int(row["output_tokens"]),
                      batch=int(row["batch"]), precision=precision)
        est = estimate(config, device.name, wl, mig=device.mig, catalog=catalog)
        # ttft = one prefill step; tpot = one decode step: the units the roofline estimates
        out.append({"gpu": device.name, "phase": "prefill", "flops": est.prefill.flops,
                    "bytes": est.prefill.bytes, "measured_ms": float(row["ttft_p50_ms"]), "layers": layers})
        out.append({"gpu": device.name, "phase": "decode", "flops": est.decode.flops,
                    "bytes": est.decode.bytes, "measured_ms": float(row["tpot_p50_ms"]), "layers": layers})
    return out


def load_measurements(*paths: str) -> list[dict]:
    """The measurements of several evaluate steps' calibration files, as one list for
    ``fit_calibration`` (empty paths skipped: no measurements off a catalog GPU). The chosen
    and the baseline model measured on the same GPU calibrate it together; their depths differ,
    which is what lets the fit tell a host cost per layer from the roofs."""
    out: list[dict] = []
    for path in filter(None, paths):
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read calibration measurements: {exc}", source=str(path)) from None
        if not isinstance(data, list):
            raise ConfigError(f"expected a list of measurements, got {type(data).__name__}", source=str(path))
        out.extend(data)
    return out
