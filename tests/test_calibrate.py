"""Measured latencies -> calibration measurements -> calibrated sizing estimates."""

from __future__ import annotations

import pytest

from rightsizer.calibrate import catalog_gpu, measurements_from_latency
from rightsizer.size_gpu import size_for_task
from rightsizer.sizing import Workload, estimate, fit_calibration

QWEN_05B = {"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
            "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
            "vocab_size": 151936, "tie_word_embeddings": True, "max_position_embeddings": 32768}


def test_device_names_map_to_the_catalog():
    assert catalog_gpu("NVIDIA H200") == "H200"
    assert catalog_gpu("NVIDIA A10G") == "A10G"
    assert catalog_gpu("cpu") is None


def _row(device, batch, ttft, tpot):
    return {"device": device, "batch": batch, "prompt_tokens": 96, "output_tokens": 8,
            "ttft_p50_ms": ttft, "tpot_p50_ms": tpot}


def test_cpu_rows_give_no_measurements():
    assert measurements_from_latency(QWEN_05B, [_row("cpu", 1, 5.0, 2.0)]) == []


def test_gpu_rows_calibrate_the_estimates(sentiment_spec):
    # a framework 3x slower than the default factors predict, at three batch sizes
    rows = []
    for b in (1, 4, 16):
        est = estimate(QWEN_05B, "H200", Workload(96, 8, batch=b))
        rows.append(_row("NVIDIA H200", b, 3 * est.ttft_ms, 3 * est.decode.latency_ms))
    meas = measurements_from_latency(QWEN_05B, rows)
    assert [m["phase"] for m in meas] == ["prefill", "decode"] * 3
    assert all(m["gpu"] == "H200" and m["flops"] > 0 and m["bytes"] > 0 for m in meas)
    factors = fit_calibration(meas)
    assert factors.mode == "calibrated" and "H200" in factors.per_gpu
    cal = estimate(QWEN_05B, "H200", Workload(96, 8, batch=4), factors=factors)
    assert cal.decode.latency_ms == pytest.approx(rows[1]["tpot_p50_ms"], rel=0.3)
    rec = size_for_task(sentiment_spec, QWEN_05B, "bf16", factors=factors)
    h200 = [o for o in rec.options if o.gpu == "H200" and o.mig is None]
    assert h200 and all(o.mode == "calibrated" for o in h200)


def test_the_chosen_and_the_baseline_model_calibrate_the_gpu_together(tmp_path):
    """size_gpu fits the chosen model's and the baseline's measurements (load_measurements):
    two depths on one GPU tell the framework's host cost per layer from the roofs, and the
    factors then predict a third depth."""
    import json

    from rightsizer.calibrate import load_measurements
    from rightsizer.errors import ConfigError

    def framework(config, b):  # 2x the default factors, plus 0.4 ms per layer and step (eager)
        est = estimate(config, "H200", Workload(96, 8, batch=b))
        layers = config["num_hidden_layers"]
        return _row("NVIDIA H200", b, 2 * est.ttft_ms + 0.4 * layers, 2 * est.decode.latency_ms + 0.4 * layers)

    deep = {**QWEN_05B, "num_hidden_layers": 12}
    files = []
    for name, config in (("chosen", deep), ("baseline", QWEN_05B)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(measurements_from_latency(config, [framework(config, b) for b in (1, 4, 16)])))
        files.append(str(path))
    meas = load_measurements(files[0], "", files[1])  # "" : an evaluate step off a catalog GPU
    assert len(meas) == 12 and {m["layers"] for m in meas} == {12, 24}
    factors = fit_calibration(meas)
    fitted = factors.per_gpu["H200"]
    assert fitted.decode_layer_ms > 0.1 and fitted.prefill_layer_ms > 0.1
    alone = fit_calibration(load_measurements(files[0]))  # one depth: no layer cost to learn
    assert alone.per_gpu["H200"].decode_layer_ms == 0.0
    third = {**QWEN_05B, "num_hidden_layers": 18}
    want = framework(third, 4)["tpot_p50_ms"]
    both = estimate(third, "H200", Workload(96, 8, batch=4), factors=factors).decode.latency_ms
    assert both == pytest.approx(want, rel=0.1)
    (tmp_path / "bad.json").write_text('{"gpu": "H200"}')
    with pytest.raises(ConfigError, match="bad.json: expected a list of measurements, got dict"):
        load_measurements(str(tmp_path / "bad.json"))
