"""The adapters' shared MLRun helpers (functions/mlrun_io.py)."""

from __future__ import annotations

import re
from pathlib import Path

from functions.mlrun_io import readable

ROOT = Path(__file__).resolve().parents[1]


def test_results_are_written_readably_to_six_significant_digits():
    out = readable({"ttft_p95_ms": 7.724738649972096, "score": 0.94375, "tokens_per_second": 20740.98941085289,
                    "cost": 0.005327210933200375, "n": 3, "flag": True, "name": "x", "nested": {"a": [1 / 3]},
                    "nan": float("nan"), "inf": float("inf")})
    assert out["ttft_p95_ms"] == 7.72474 and out["score"] == 0.94375 and out["tokens_per_second"] == 20741.0
    assert out["cost"] == 0.00532721 and out["nested"] == {"a": [0.333333]}
    assert (out["n"], out["flag"], out["name"]) == (3, True, "x") and out["inf"] == float("inf")
    assert out["nan"] != out["nan"]


def test_every_adapter_logs_results_through_readable():
    # quantize_gptq runs in its own environment (.venv-gptq) and logs no float
    for path in sorted((ROOT / "functions").glob("*.py")):
        if path.name in ("mlrun_io.py", "quantize_gptq.py"):
            continue
        assert not re.search(r"\.log_results\(", path.read_text()), f"{path.name}: use mlrun_io.log_results"
