"""The continuous-batching serving model: physics it may not break, how throughput behaves
with batch and workload shape, where it is wired (size --json, recommend, the fleet plan), and
the errors for inputs that cannot be served."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError, NoFeasibleOption
from rightsizer.precisions import get_precision
from rightsizer.sizing import SLO, Factors, Workload, estimate, load_catalog, model_spec, recommend
from rightsizer.sizing.batching import MAX_SEQS, StepModel, kv_max_batch, serving_curve
from rightsizer.sizing.memory import weights_bytes
from rightsizer.sizing.params import count_spec

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
LLAMA8 = str(CONFIGS / "llama-3.1-8b.json")
LLAMA70 = str(CONFIGS / "llama-2-70b.json")
CASES = [  # (config, gpu, count, precision, prompt, output)
    (LLAMA8, "H100-SXM", 1, "fp8", 128, 128),
    (LLAMA8, "A100-80GB", 1, "bf16", 2048, 128),
    (LLAMA8, "L40S", 1, "fp8", 20000, 2000),
    (LLAMA8, "L4", 1, "int4", 512, 256),
    (LLAMA70, "H100-SXM", 4, "bf16", 1000, 1000),
    (str(CONFIGS / "mixtral-8x7b.json"), "H200", 2, "fp8", 500, 2000),
    (str(CONFIGS / "qwen2.5-0.5b.json"), "T4", 1, "fp16", 256, 64),
]
IDS = [f"{Path(c[0]).stem}-{c[1]}x{c[2]}-{c[3]}-{c[4]}-{c[5]}" for c in CASES]


def _est(case, factors=None, batch=1):
    cfg, gpu, count, prec, p, o = case
    return estimate(cfg, gpu, Workload(p, o, batch, prec), count=count, factors=factors)


def test_host_time_hides_under_the_gpu_or_adds_to_it_as_the_engine_overlaps():
    """``host_overlap`` 1: a step takes the longer of the host's time and the GPU's; 0: the two
    add up; in between, the unhidden share adds. The host decides a tiny model's decode step."""
    from dataclasses import replace

    qwen = str(CONFIGS / "qwen2.5-0.5b.json")
    base = replace(Factors.defaults(), host_step_ms=0.0, host_seq_us=0.0)
    gpu_ms = estimate(qwen, "H100-SXM", Workload(128, 64, 64, "bf16"), factors=base).tpot_ms
    host_ms = 4.0 * gpu_ms  # far above the GPU's step: the host decides
    tpot = {share: estimate(qwen, "H100-SXM", Workload(128, 64, 64, "bf16"), factors=replace(
        base, host_step_ms=host_ms, host_overlap=share)).tpot_ms for share in (1.0, 0.5, 0.0)}
    # hidden: the host's time and the step's fixed overheads (outside the floor), not the GPU's work
    assert host_ms <= tpot[1.0] < host_ms + gpu_ms / 2
    assert tpot[0.0] == pytest.approx(host_ms + gpu_ms, rel=0.02)  # taking turns: both
    assert tpot[1.0] <= tpot[0.5] < tpot[0.0]
    with pytest.raises(ConfigError, match=r"host_overlap must be in \[0, 1\], got 1.5"):
        replace(base, host_overlap=1.5)


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_decode_is_never_faster_than_reading_the_weights(case):
    cat = load_catalog()
    est = _est(case)
    gpu = cat.get(case[1])
    # the block weights one token uses (top-k experts of a MoE), at their stored size, split over the GPUs
    floor_ms = est.params.linear_active * get_precision(est.precision).bytes_per_weight / case[2] \
        / gpu.memory_bandwidth * 1e3
    assert est.tpot_ms >= floor_ms
    # and the roofline mode (100 % of the roofs) is the fastest it can be, still not under the floor
    assert _est(case, Factors.roofline()).tpot_ms >= floor_ms * 0.999


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_prefill_is_never_faster_than_its_flops_at_peak(case):
    cat = load_catalog()
    est = _est(case)
    gpu = cat.get(case[1])
    prec = get_precision(est.precision)
    peak = max(gpu.peak_flops(prec.compute), gpu.peak_flops("fp16"))
    min_flops = 2 * est.params.active * case[4] * 0.9  # linear layers alone (embeddings are no FLOPs)
    assert est.ttft_ms >= min_flops / (peak * case[2]) * 1e3


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_throughput_never_exceeds_what_the_kv_cache_allows(case):
    est = _est(case)
    curve = est.serving
    assert curve is not None and curve.best.batch <= min(curve.max_batch, MAX_SEQS)
    cat = load_catalog()
    gpu = cat.get(case[1])
    prec = get_precision(est.precision)
    step_floor_s = weights_bytes(est.params, prec) / case[2] / gpu.memory_bandwidth
    # each step yields at most one token per sequence in flight, and a step reads the weights
    ceiling = min(curve.max_batch, MAX_SEQS) * case[5] / max(1, case[5] - 1) / step_floor_s
    assert 0 < est.max_throughput_tokens_per_s <= ceiling
    # the KV cache of the best batch fits beside the weights
    spec = model_spec(case[0])
    per_seq = est.kv_bytes_per_token * (case[4] + case[5] // 2) / min(case[2], spec.kv_heads)
    assert curve.best.batch * per_seq + est.weights_bytes / case[2] <= gpu.memory_bytes


def test_throughput_rises_with_batch_until_memory_or_compute_bounds_it():
    est = _est(CASES[0])
    pts = est.serving.points
    rates = [p.output_tokens_per_s for p in pts]
    assert len(pts) >= 8
    assert all(b >= a * 0.999 for a, b in zip(rates, rates[1:])), rates
    assert rates[4] > 8 * rates[0]  # 16 in flight: the weights read is shared (memory-bound decode)
    assert rates[-1] < 2 * rates[-2]  # at the top it flattens: compute or the budget binds
    # TPOT at load grows with batch; at batch 1 it is close to the lone decode step
    assert pts[-1].tpot_ms > pts[0].tpot_ms
    assert pts[0].tpot_ms == pytest.approx(est.tpot_ms, rel=0.5)


def test_a_long_prompt_short_output_workload_is_prefill_bound():
    long_in = estimate(LLAMA8, "H100-SXM", Workload(8000, 16, 1, "fp8"))
    assert long_in.serving.limit == "prefill"
    short_in = estimate(LLAMA8, "H100-SXM", Workload(128, 1024, 1, "fp8"))
    assert short_in.serving.limit != "prefill"
    # and per output token, the long prompt costs far more
    assert long_in.max_throughput_tokens_per_s < short_in.max_throughput_tokens_per_s / 10


def test_more_kv_room_means_more_throughput_for_long_sequences():
    bf16_kv = estimate(LLAMA8, "H100-SXM", Workload(2000, 2000, 1, "fp8", "bf16"))
    fp8_kv = estimate(LLAMA8, "H100-SXM", Workload(2000, 2000, 1, "fp8", "fp8"))
    assert fp8_kv.serving.max_batch > 1.8 * bf16_kv.serving.max_batch
    assert fp8_kv.max_throughput_tokens_per_s > bf16_kv.max_throughput_tokens_per_s


def test_size_json_reports_max_throughput_beside_batch_one_latency(capsys):
    from rightsizer.cli import main

    assert main(["size", "--config", LLAMA8, "--gpu", "H100-SXM", "--precision", "fp8", "--prompt-tokens", "1000",
                 "--output-tokens", "1000", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["batch"] == 1 and out["ttft_ms"] > 0 and out["tpot_ms"] > 0
    assert out["max_throughput_tokens_per_s"] > 20 * out["throughput_tokens_per_s"]
    s = out["serving"]
    assert s["max_throughput_tokens_per_s"] == out["max_throughput_tokens_per_s"]
    assert s["token_budget"] == 8192 and s["best_batch"] > 1 and s["limit"] in (
        "prefill", "kv-memory", "max-sequences", "compute", "memory", "overhead")
    assert out["mode"] == "default-factors"


def test_operator_data_mode_times_gemms_from_the_measured_tables_where_a_gpu_has_them():
    f = Factors.defaults()
    from dataclasses import replace

    od = replace(f, operator_data=True)
    h100 = estimate(LLAMA8, "H100-SXM", Workload(128, 128, 1, "fp8"), factors=od)
    l4 = estimate(LLAMA8, "L4", Workload(128, 128, 1, "fp8"), factors=od)
    assert h100.mode == "operator-data" and l4.mode == "default-factors"
    default = estimate(LLAMA8, "H100-SXM", Workload(128, 128, 1, "fp8"), factors=f)
    assert h100.ttft_ms != pytest.approx(default.ttft_ms, rel=1e-3)
    # the measured fp8 GEMMs at M=1 read the weights at about half the peak bandwidth (table: 0.53)
    from rightsizer.sizing.operator_data import gemm_table, share_of_peak

    table = gemm_table("H100-SXM", "fp8")
    assert table is not None and 0.001 < share_of_peak(table, 1) < share_of_peak(table, 1024) < 1
    assert gemm_table("L4", "fp8") is None and gemm_table("H100-SXM", "nf4") is None


def test_recommend_and_the_fleet_plan_use_the_continuous_batching_throughput():
    wl = Workload(1000, 200, 32, "fp8")
    rec = recommend(LLAMA8, wl, SLO(ttft_ms=2000, tpot_ms=100), gpus=["H100-SXM"], include_mig=False,
                    precisions=["fp8"])
    o = rec.chosen
    est = estimate(LLAMA8, "H100-SXM", wl)
    assert o.throughput_tokens_per_s == pytest.approx(est.throughput_tokens_per_s)
    assert o.max_throughput_tokens_per_s == pytest.approx(est.max_throughput_tokens_per_s)
    # with 32 in flight and prefill included, less than 32 sequences decoding at the lone TPOT
    assert est.throughput_tokens_per_s < 32 * 1000 / est.tpot_ms
    assert o.tpot_ms == pytest.approx(est.served_tpot_ms) and est.served_tpot_ms >= est.tpot_ms

    from rightsizer.plan import plan_fleet

    config = json.loads(Path(LLAMA8).read_text())
    decision = {"task": "t", "chosen": {"model": "t-model", "params": 1, "precision": "fp8", "config": config},
                "baseline": {"model": "big", "params": 1, "precision": "fp8", "config": config},
                "workload": {"prompt_tokens": 1000, "output_tokens": 200, "batch": 32},
                "slo": {"ttft_ms": 2000, "tpot_ms": 100, "throughput_tokens_per_s": 3 * est.throughput_tokens_per_s},
                "price_list": {"name": "aws-on-demand-us-east-1"}}
    plan = plan_fleet([decision], devices=["H100-SXM"], include_mig=False, include_cpu=False, baseline=False)
    p = plan.groups[0].placements[0]
    # the plan sized the batch up until the demand fits in the headroom, on the batching model's figures
    sized = estimate(LLAMA8, "H100-SXM", Workload(1000, 200, p.batch, "fp8"))
    assert p.busy_fraction == pytest.approx(decision["slo"]["throughput_tokens_per_s"]
                                            / sized.throughput_tokens_per_s, rel=1e-6)
    assert p.busy_per_replica <= 0.8


def test_a_precision_the_gpu_cannot_run_is_refused_with_the_reason():
    rec = recommend(LLAMA8, Workload(512, 128, 1, "fp8"), SLO(ttft_ms=5000, tpot_ms=500), gpus=["A100-80GB", "L4"],
                    include_mig=False, precisions=["fp8"])
    a100 = [o for o in rec.options if o.gpu == "A100-80GB"]
    assert a100 and all(not o.feasible and "lacks fp8" in o.reason for o in a100)
    with pytest.raises(ConfigError, match="unknown precision 'fp6'"):
        Workload(512, 128, 1, "fp6")


def test_a_workload_that_fits_no_batch_says_what_does_not_fit():
    spec = model_spec(LLAMA70)
    cat = load_catalog()
    f = Factors.defaults()
    prec = get_precision("bf16")
    model = StepModel(spec=spec, prec=prec, kv="bf16", gpu=cat.get("L40S"), count=1, compute_eff=0.7,
                      memory_eff=0.8, overhead_ms=0.5, quant_memory_eff=1.0, factors=f, op_eff=None,
                      attention_dtype="bf16")
    assert kv_max_batch(spec, count_spec(spec), prec, "bf16", cat.get("L40S"), 1, 1000, 100, f, 8192) == 0
    with pytest.raises(NoFeasibleOption, match=r"no room for the KV cache of one 1000\+100-token sequence"):
        serving_curve(model, count_spec(spec), 1000, 100)
    # estimate still answers (it reports the misfit), with no throughput to offer
    est = estimate(LLAMA70, "L40S", Workload(1000, 100, 1, "bf16"))
    assert not est.fits and est.serving is None and est.max_throughput_tokens_per_s == 0
    assert any("no room for the KV cache" in w for w in est.warnings)


def test_one_estimate_is_a_few_milliseconds_of_work():
    """Not a timing assertion: the sweep is bounded (log2 of the KV-limited batch + 1 points)."""
    est = _est(CASES[0])
    assert len(est.serving.points) <= math.ceil(math.log2(MAX_SEQS)) + 2


# --------------------------------------------------------------------------- launch costs and MoE factors


def _with(**changes):
    import dataclasses

    return dataclasses.replace(Factors.defaults(), **changes)


def test_a_step_that_prefills_pays_the_eager_launch_cost_and_a_decode_step_does_not():
    """Serving engines replay decode-only steps as CUDA graphs and launch a prefill kernel by
    kernel: the prefill launch cost moves TTFT, not TPOT; the batching model charges it only
    to the share of steps that hold a prefill."""
    work = Workload(128, 128, 1, "fp8")
    cheap = estimate(LLAMA8, "H100-SXM", work, factors=_with(prefill_kernel_overhead_us=0.0))
    dear = estimate(LLAMA8, "H100-SXM", work, factors=_with(prefill_kernel_overhead_us=20.0))
    launches = sum(op.kernels for op in _ops(LLAMA8, "fp8", "prefill"))
    assert dear.ttft_ms - cheap.ttft_ms == pytest.approx(launches * 20.0 / 1e3, rel=1e-6)
    assert dear.tpot_ms == pytest.approx(cheap.tpot_ms)
    # batch 1, closed loop: one step in ~128 holds the next prompt, so TPOT at load barely moves
    first = lambda e: e.serving.points[0]  # noqa: E731
    assert first(dear).tpot_ms - first(cheap).tpot_ms < 0.05 * (dear.ttft_ms - cheap.ttft_ms)
    # None: a prefill costs what a decode launch costs (the factor before it existed)
    same = estimate(LLAMA8, "H100-SXM", work, factors=_with(prefill_kernel_overhead_us=None))
    base = Factors.defaults()
    assert same.ttft_ms == pytest.approx(cheap.ttft_ms + launches * base.kernel_overhead_us / 1e3, rel=1e-6)


def _ops(config: str, precision: str, phase: str):
    from rightsizer.sizing.roofline import build_ops

    spec = model_spec(json.loads(Path(config).read_text()))
    return build_ops(spec, get_precision(precision), "bf16", 1, 128, 128, phase)


def test_moe_factors_split_compute_from_memory_and_fp8_expert_gemms_have_their_own_scale():
    mix = str(CONFIGS / "mixtral-8x7b.json")
    long_fp8, long_bf16 = Workload(2048, 16, 1, "fp8"), Workload(2048, 16, 1, "bf16")
    base = Factors.defaults()
    slow = _with(moe_compute_scale={"fp8": base.moe_compute_scale["fp8"] / 2})
    # a long prefill is compute-bound: the fp8 expert scale slows fp8, not bf16
    assert estimate(mix, "H200", long_fp8, count=2, factors=slow).ttft_ms > \
        1.2 * estimate(mix, "H200", long_fp8, count=2).ttft_ms
    assert estimate(mix, "H200", long_bf16, count=2, factors=slow).ttft_ms == pytest.approx(
        estimate(mix, "H200", long_bf16, count=2).ttft_ms)
    # decode reads every touched expert: memory efficiency moves TPOT, the compute factors do not
    short = Workload(128, 64, 1, "bf16")
    lo, hi = (estimate(mix, "H200", short, count=2, factors=_with(moe_memory_efficiency=m)) for m in (0.6, 1.2))
    assert lo.tpot_ms > 1.5 * hi.tpot_ms
    weak = _with(moe_efficiency=base.moe_efficiency / 2)
    assert estimate(mix, "H200", short, count=2, factors=weak).tpot_ms == pytest.approx(
        estimate(mix, "H200", short, count=2).tpot_ms, rel=0.02)


@pytest.mark.parametrize("changes, expected", [
    ({"moe_memory_efficiency": 0.0}, "moe_memory_efficiency must be in (0, 1.5]"),
    ({"moe_memory_efficiency": 2.0}, "moe_memory_efficiency must be in (0, 1.5]"),
    ({"moe_compute_scale": {"fp8": 1.5}}, "moe_compute_scale[fp8] must be in (0, 1]"),
    ({"prefill_kernel_overhead_us": -1.0}, "prefill_kernel_overhead_us must be >= 0"),
])
def test_bad_launch_and_moe_factors_are_refused(changes, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("(", r"\(").replace("]", r"\]")):
        _with(**changes)


# --------------------------------------------------------------------------- engine settings and parallelism


def test_an_fp8_kv_cache_holds_twice_the_sequences_of_a_16_bit_one():
    """KV bytes per token follow the KV dtype: with the weights and reserve fixed, an fp8 cache
    doubles the batch the KV memory holds (NVIDIA's FP8 checkpoints quantize the KV cache too)."""
    spec = model_spec(LLAMA8)
    params = count_spec(spec)
    gpu = load_catalog().get("H100-SXM")
    base = Factors.defaults()
    held = {kv: kv_max_batch(spec, params, get_precision("fp8"), kv, gpu, 1, 20000, 2000, base, 8192)
            for kv in ("bf16", "fp8")}
    assert held["fp8"] == pytest.approx(2 * held["bf16"], abs=1)
    # a KV-bound long-context workload gains close to 2x: its steps read KV bytes, now half as many
    slow, fast = (estimate(LLAMA8, "H100-SXM", Workload(20000, 2000, 1, "fp8", kv)) for kv in ("bf16", "fp8"))
    assert slow.serving.limit == "kv-memory"
    assert 1.6 < fast.max_throughput_tokens_per_s / slow.max_throughput_tokens_per_s < 2.1


def test_an_engine_that_reserves_each_requests_whole_length_holds_fewer_sequences():
    """kv_output_share: 0.5 holds P + O/2 tokens per sequence (blocks allocated as tokens arrive),
    1.0 reserves P + O at admission (TensorRT-LLM's GUARANTEED_NO_EVICT)."""
    spec = model_spec(LLAMA8)
    params = count_spec(spec)
    gpu = load_catalog().get("H100-SXM")
    prec = get_precision("fp8")
    on_demand, reserved = (kv_max_batch(spec, params, prec, "fp8", gpu, 1, 2048, 2048, _with(kv_output_share=s), 8192)
                           for s in (0.5, 1.0))
    assert reserved / on_demand == pytest.approx((2048 + 1024) / (2048 + 2048), rel=0.01)
    work = Workload(2048, 2048, 1, "fp8", "fp8")
    assert estimate(LLAMA8, "H100-SXM", work, factors=_with(kv_output_share=1.0)).max_throughput_tokens_per_s < \
        estimate(LLAMA8, "H100-SXM", work).max_throughput_tokens_per_s
    # TTFT (prefill alone) does not depend on it
    assert estimate(LLAMA8, "H100-SXM", work, factors=_with(kv_output_share=1.0)).ttft_ms == pytest.approx(
        estimate(LLAMA8, "H100-SXM", work).ttft_ms)


def test_without_cuda_graphs_every_decode_step_pays_the_eager_launch_cost():
    work = Workload(128, 128, 1, "fp8")
    graphs = estimate(LLAMA8, "H100-SXM", work)
    eager = estimate(LLAMA8, "H100-SXM", work, factors=_with(decode_cuda_graphs=False))
    base = Factors.defaults()
    launches = sum(op.kernels for op in _ops(LLAMA8, "fp8", "decode"))
    extra = launches * (base.prefill_kernel_overhead_us - base.kernel_overhead_us) / 1e3
    assert eager.tpot_ms - graphs.tpot_ms == pytest.approx(extra, rel=1e-6)
    assert eager.ttft_ms == pytest.approx(graphs.ttft_ms)  # a prefill launches eagerly either way
    # long outputs: most steps decode only, and those now launch eagerly too
    long_out = Workload(128, 2048, 1, "fp8", "fp8")
    assert estimate(LLAMA8, "H100-SXM", long_out, factors=_with(decode_cuda_graphs=False)).max_throughput_tokens_per_s \
        < 0.99 * estimate(LLAMA8, "H100-SXM", long_out).max_throughput_tokens_per_s


def test_tensor_parallel_all_reduce_time_grows_with_tp_and_with_the_tokens_of_a_step():
    from rightsizer.sizing.roofline import build_ops, phase_time

    spec = model_spec(LLAMA70)
    prec = get_precision("bf16")
    gpu = load_catalog().get("H100-SXM")
    base = Factors.defaults()

    def comm(tp: int, tokens: int) -> float:
        ops = build_ops(spec, prec, "bf16", tokens, 1, 1000, "decode", tp)
        return phase_time("decode", ops, gpu, prec, tp, tokens=tokens, hidden=spec.hidden, layers=spec.layers,
                          compute_eff=0.7, memory_eff=0.8, overhead_ms=0.0, quant_memory_eff=1.0,
                          allreduce_latency_us=base.allreduce_latency_us, link_eff=base.link_efficiency).comm_ms

    assert comm(1, 256) == 0.0
    assert 0 < comm(2, 256) < comm(4, 256) < comm(8, 256)
    assert comm(4, 16) < comm(4, 256) < comm(4, 2048)
    # two all-reduces per layer, each at least its latency; the bandwidth part is the ring's 2 (tp - 1) / tp
    floor = 2 * spec.layers * base.allreduce_latency_us / 1e3
    assert comm(4, 1) == pytest.approx(floor, rel=0.01)
    ring = (comm(8, 2048) - floor) / (comm(2, 2048) - floor)
    assert ring == pytest.approx((2 * 7 / 8) / (2 * 1 / 2), rel=1e-6)
    # a slower link (PCIe) costs more per step than NVLink
    pcie = load_catalog().get("L40S")
    ops = build_ops(spec, prec, "bf16", 256, 1, 1000, "decode", 4)
    slow = phase_time("decode", ops, pcie, prec, 4, tokens=256, hidden=spec.hidden, layers=spec.layers,
                      compute_eff=0.7, memory_eff=0.8, overhead_ms=0.0, quant_memory_eff=1.0,
                      allreduce_latency_us=base.allreduce_latency_us, link_eff=base.link_efficiency).comm_ms
    assert slow > 5 * comm(4, 256)


@pytest.mark.parametrize("changes, expected", [
    ({"kv_output_share": 1.5}, "kv_output_share must be in [0, 1]"),
    ({"kv_output_share": -0.1}, "kv_output_share must be in [0, 1]"),
    ({"decode_cuda_graphs": "yes"}, "decode_cuda_graphs must be true or false"),
])
def test_bad_engine_settings_are_refused(changes, expected):
    with pytest.raises(ConfigError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        _with(**changes)
