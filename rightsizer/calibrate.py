"""Feed the evaluate step's measured latencies into the sizing engine's calibration.

A latency measured on a catalog GPU (time to first token and per output token, at several
batch sizes) becomes prefill and decode measurements with the FLOPs and bytes the sizing
engine computes for that same workload; ``rightsizer.sizing.fit_calibration`` fits the
efficiency factors from them, and later estimates on that GPU say "calibrated".
Measurements taken on a CPU or on a GPU the catalog does not know are not used.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from rightsizer.errors import ConfigError
from rightsizer.sizing import Workload, default_catalog, estimate
from rightsizer.sizing.params import model_spec


def catalog_gpu(device_name: str, catalog=None) -> str | None:
    """The catalog name of a device as torch reports it ("NVIDIA H200" -> "H200"), or None."""
    catalog = catalog or default_catalog()
    name = re.sub(r"^(NVIDIA|AMD)\s+", "", device_name.strip(), flags=re.I)
    for candidate in (name, name.replace(" ", "-"), name.split(" ")[0]):
        if candidate in catalog:
            return catalog.get(candidate).name
    return None


def measurements_from_latency(config, latency_rows: list[dict], precision: str = "bf16",
                              catalog=None) -> list[dict]:
    """Calibration measurements (``fit_calibration`` input) from ``measure_latency`` rows."""
    out = []
    layers = model_spec(config).layers  # lets the fit learn a host cost per layer (eager frameworks)
    for row in latency_rows:
        gpu = catalog_gpu(row["device"], catalog)
        if gpu is None:
            continue
        wl = Workload(prompt_tokens=int(row["prompt_tokens"]), output_tokens=int(row["output_tokens"]),
                      batch=int(row["batch"]), precision=precision)
        est = estimate(config, gpu, wl)
        # ttft = one prefill step; tpot = one decode step: the units the roofline estimates
        out.append({"gpu": gpu, "phase": "prefill", "flops": est.prefill.flops,
                    "bytes": est.prefill.bytes, "measured_ms": float(row["ttft_p50_ms"]), "layers": layers})
        out.append({"gpu": gpu, "phase": "decode", "flops": est.decode.flops,
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
