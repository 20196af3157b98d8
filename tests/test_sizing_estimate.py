"""Estimate: physical sanity, phases, fit, TP, MIG, offload, modes and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError
from rightsizer.sizing import (
    Factors, ParamCount, Workload, count_params, estimate, get_precision, load_catalog, roofline_figure,
    weights_bytes)

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
LLAMA8 = str(CONFIGS / "llama-3.1-8b.json")
CATALOG = load_catalog()


def _active_weight_bytes(pc: ParamCount, precision: str, skip_embedding: bool) -> float:
    """Bytes one decode step must read: every active weight (routed experts only for MoE), but
    with ``skip_embedding`` not the input-embedding table (one row is looked up), unless tied."""
    active = ParamCount(total=pc.active, active=pc.active, embedding=pc.embedding, lm_head=pc.lm_head,
                        linear=pc.linear_active, linear_active=pc.linear_active, other=pc.other)
    b = weights_bytes(active, precision)
    if skip_embedding and pc.lm_head:  # untied: the embedding table is not streamed
        b -= pc.embedding * get_precision(precision).dense_bytes
    return b


@pytest.mark.parametrize("gpu", CATALOG.names)
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp8", "int8", "int4", "nf4"])
@pytest.mark.parametrize("model", ["llama-3.1-8b", "qwen2.5-0.5b", "gemma-2-2b", "mixtral-8x7b", "gpt2"])
def test_decode_never_beats_reading_the_weights(gpu, precision, model):
    """Physical floor: one decode step at batch 1 reads every active weight once.

    Default factors: TPOT >= weights_bytes / bandwidth (the issue's sanity rule).
    Pure roofline: TPOT >= (weights - the untied embedding table, which is only indexed) / bandwidth.
    """
    cfg = json.loads((CONFIGS / f"{model}.json").read_text())
    g = CATALOG.get(gpu)
    pc = count_params(cfg)
    est = estimate(cfg, g, Workload(128, 64, 1, precision))
    assert est.tpot_ms >= _active_weight_bytes(pc, precision, False) / g.memory_bandwidth * 1e3
    if pc.total == pc.active:
        assert est.tpot_ms >= est.weights_bytes / g.memory_bandwidth * 1e3
    roof = estimate(cfg, g, Workload(128, 64, 1, precision), factors=Factors.roofline())
    assert roof.tpot_ms >= _active_weight_bytes(pc, precision, True) / g.memory_bandwidth * 1e3 * 0.9999
    assert roof.tpot_ms <= est.tpot_ms and est.ttft_ms > 0 and est.throughput_tokens_per_s > 0


def test_roofline_decode_equals_streaming_the_weights():
    """Pure roofline at batch 1 is the weight stream plus tiny KV/activation traffic."""
    for gpu in CATALOG:
        if not gpu.supports("bf16"):
            continue
        est = estimate(LLAMA8, gpu, Workload(1, 1, 1, "bf16"), factors=Factors.roofline())
        pc = est.params
        streamed = est.weights_bytes - 2 * pc.embedding
        assert est.tpot_ms == pytest.approx(streamed / gpu.memory_bandwidth * 1e3, rel=0.01)


def test_phase_verdicts_and_keys():
    est = estimate(LLAMA8, "A100-80GB", Workload(2048, 128, 1))
    assert est.prefill.bound == "compute" and est.decode.bound == "memory"
    assert est.prefill.arithmetic_intensity > est.prefill.threshold > est.decode.arithmetic_intensity
    assert est.prefill.threshold == pytest.approx(312e12 / 2039e9)
    # prefill of 2048 tokens: ~2 * params * tokens FLOPs plus attention
    assert est.prefill.flops == pytest.approx(2 * 8.03e9 * 2048, rel=0.1)
    d = est.to_dict()
    for key in ("params_total", "params_active", "weights_bytes", "kv_bytes_per_token", "prefill", "decode",
                "ttft_ms", "tpot_ms", "throughput_tokens_per_s", "fits", "min_gpus", "mode"):
        assert key in d
    for key in ("flops", "bytes", "arithmetic_intensity", "bound", "latency_ms"):
        assert key in d["prefill"] and key in d["decode"]
    assert d["kv_bytes_per_token"] == 131_072 and d["mode"] == "default-factors"


def test_latency_grows_with_context_batch_and_shrinks_with_tp():
    a = estimate(LLAMA8, "H100-SXM", Workload(512, 128, 1))
    b = estimate(LLAMA8, "H100-SXM", Workload(8192, 128, 1))
    c = estimate(LLAMA8, "H100-SXM", Workload(512, 128, 32))
    d = estimate(LLAMA8, "H100-SXM", Workload(512, 128, 1), count=2)
    assert b.ttft_ms > a.ttft_ms * 10 and b.tpot_ms > a.tpot_ms
    assert c.tpot_ms > a.tpot_ms and c.throughput_tokens_per_s > 10 * a.throughput_tokens_per_s
    assert d.tpot_ms < a.tpot_ms and d.decode.comm_ms > 0 and d.price_per_hour == 2 * a.price_per_hour
    assert a.cost_per_1m_output_tokens == pytest.approx(a.price_per_hour / (a.throughput_tokens_per_s * 3600) * 1e6)


def test_fit_min_gpus_max_batch_and_offload():
    seventy = str(CONFIGS / "llama-2-70b.json")
    one = estimate(seventy, "A100-80GB", Workload(1024, 256, 1))
    assert not one.fits and one.min_gpus == 2
    assert one.offload is not None and one.offload["added_ms_per_step"] > 1000  # ~60 GB over PCIe Gen4
    assert one.tpot_ms > one.offload["added_ms_per_step"]
    two = estimate(seventy, "A100-80GB", Workload(1024, 256, 1), count=2)
    assert two.fits and two.offload is None
    assert estimate(seventy, "A100-80GB", Workload(1024, 256, 1, "int4")).fits
    small = estimate(LLAMA8, "L4", Workload(1024, 256, 1))
    at_max = estimate(LLAMA8, "L4", Workload(1024, 256, small.max_batch))
    over = estimate(LLAMA8, "L4", Workload(1024, 256, small.max_batch + 1))
    assert at_max.fits and not over.fits
    ctx = estimate(LLAMA8, "L4", Workload(small.max_context - 1, 1, 1))
    assert ctx.fits and not estimate(LLAMA8, "L4", Workload(small.max_context + 1, 1, 1)).fits


def test_fit_counts_kv_and_reserve():
    est = estimate(LLAMA8, "A100-40GB", Workload(4096, 4096, 8))
    assert est.kv_bytes == 8 * 8192 * 131_072
    assert est.memory_per_gpu_bytes >= est.weights_bytes + est.kv_bytes + est.reserve_bytes
    assert est.reserve_bytes >= 2**30


def test_mig_slice_is_slower_and_cheaper():
    full = estimate(LLAMA8, "A100-80GB", Workload(512, 128, 1, "int4"))
    mig = estimate(LLAMA8, "A100-80GB", Workload(512, 128, 1, "int4"), mig="3g.40gb")
    assert mig.mig == "3g.40gb" and mig.fits and mig.min_gpus is None
    assert mig.tpot_ms > 1.5 * (full.tpot_ms - 0.5) and mig.price_per_hour < full.price_per_hour
    assert not estimate(LLAMA8, "A100-80GB", Workload(512, 128, 1), mig="1g.10gb").fits
    with pytest.raises(ConfigError, match="count must be 1"):
        estimate(LLAMA8, "A100-80GB", Workload(512, 128, 1), mig="3g.40gb", count=2)


def test_sliding_window_and_moe_decode():
    mistral = str(CONFIGS / "mistral-7b-v0.1.json")
    short = estimate(mistral, "A10G", Workload(4000, 10, 1))
    long = estimate(mistral, "A10G", Workload(30000, 10, 1))
    assert long.kv_bytes == short.kv_bytes // 4010 * 4096  # capped at the 4096 window
    mix = str(CONFIGS / "mixtral-8x7b.json")
    b1 = estimate(mix, "H200", Workload(128, 64, 1))
    b64 = estimate(mix, "H200", Workload(128, 64, 64))
    assert b1.decode.bytes < b64.decode.bytes  # more experts touched with more tokens


def test_quantization_speeds_up_memory_bound_decode():
    bf = estimate(LLAMA8, "L40S", Workload(256, 64, 1, "bf16"))
    f8 = estimate(LLAMA8, "L40S", Workload(256, 64, 1, "fp8"))
    i4 = estimate(LLAMA8, "L40S", Workload(256, 64, 1, "int4"))
    assert i4.tpot_ms < f8.tpot_ms < bf.tpot_ms
    t4 = estimate(LLAMA8, "T4", Workload(256, 64, 1, "fp8"))
    assert any("fp8" in w for w in t4.warnings)
    assert any("FlashAttention-2" in w for w in t4.warnings)


def test_calibrated_factors_change_mode(tmp_path):
    from rightsizer.sizing import GpuFactors

    f = Factors.defaults()
    cal = Factors(**{**f.__dict__, "mode": "calibrated",
                     "per_gpu": {"L4": GpuFactors(0.5, 0.6, 1.0)}})
    est = estimate(LLAMA8, "L4", Workload(256, 64), factors=cal)
    assert est.mode == "calibrated"
    assert estimate(LLAMA8, "L40S", Workload(256, 64), factors=cal).mode == "default-factors"
    assert est.tpot_ms > estimate(LLAMA8, "L4", Workload(256, 64)).tpot_ms


def test_bad_input():
    with pytest.raises(ConfigError) as exc:
        Workload(0, -1, 1, "int3")
    assert len(exc.value.problems) == 3
    with pytest.raises(ConfigError, match="known GPUs: T4, A10G"):
        estimate(LLAMA8, "Z100", Workload(1, 1))
    with pytest.raises(ConfigError, match="does not divide 32 attention heads"):
        estimate(LLAMA8, "H100-SXM", Workload(1, 1), count=3)
    with pytest.raises(ConfigError, match="unknown KV-cache precision"):
        Workload(1, 1, kv_precision="int2")
    with pytest.raises(ConfigError, match="positive integer"):
        Workload(10, 10, batch=True)


def test_roofline_figure_has_lines_and_points():
    ests = [estimate(LLAMA8, g, Workload(1024, 128, 1)) for g in ("L4", "H100-SXM")]
    fig = roofline_figure(ests, model="meta-llama/Llama-3.1-8B")
    roofs = [t for t in fig.data if t.mode == "lines"]
    points = [t for t in fig.data if t.mode == "markers" and t.x[0] is not None]
    assert len(roofs) == 2 and len(points) == 4
    for roof in roofs:  # drawn exactly: the bandwidth slope to the ridge, then flat at the peak
        assert len(roof.x) == 3 and roof.y[1] == roof.y[2] > roof.y[0]
        # its points are drawn in the roof's colour
        mine = [t for t in points if t.legendgroup == roof.legendgroup]
        assert len(mine) == 2 and {t.marker.color for t in mine} == {roof.line.color}
    assert len({r.line.color for r in roofs}) == 2
    # one legend entry per device, plus prefill / decode shapes: not one per point
    assert sum(t.showlegend is not False for t in fig.data) == 4
    assert "meta-llama/Llama-3.1-8B" in fig.layout.title.text and "modelled" in fig.layout.title.text
    assert fig.layout.xaxis.type == "log" and "FLOP / byte" in fig.layout.xaxis.title.text
    assert "FLOP/s" in fig.layout.yaxis.title.text


def test_roofline_bound_is_read_from_where_the_point_sits():
    from rightsizer.sizing.plots import bound_at

    peak, bw = 1e15, 1e12  # ridge at 1000 FLOP/byte
    assert bound_at(10, 0.9 * 10 * bw, peak, bw) == ("memory", pytest.approx(0.9))
    assert bound_at(5000, 0.8 * peak, peak, bw) == ("compute", pytest.approx(0.8))
    # two orders of magnitude under the roof: neither bandwidth nor compute limits it
    assert bound_at(10, 0.01 * 10 * bw, peak, bw)[0] == "overhead"
    assert bound_at(5000, 0.01 * peak, peak, bw)[0] == "overhead"


def test_roofline_highlights_the_chosen_option():
    from rightsizer.sizing import SLO, recommend

    rec = recommend(LLAMA8, Workload(1024, 256, 1), SLO(500, 30))
    fig = roofline_figure(rec, limit=4)
    roofs = [t for t in fig.data if t.mode == "lines"]
    assert roofs[0].name.endswith("(chosen)") and roofs[0].opacity == 1.0
    assert all(r.opacity < 1.0 for r in roofs[1:]) and len(roofs) == 4
    chosen_pts = [t for t in fig.data if t.mode == "markers" and t.legendgroup == roofs[0].legendgroup]
    assert all(t.marker.line.width == 2 for t in chosen_pts)
    hover = " ".join(t.hovertemplate for t in chosen_pts)
    assert "-bound" in hover and "of the roof" in hover
    assert rec.chosen.gpu in fig.layout.title.text
