"""Open-loop traffic (rightsizer.sizing.traffic): length histograms, the scheduler simulation
against queueing theory where theory has an answer, and its use by `size`, the decision record
and the fleet plan."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError, NoFeasibleOption
from rightsizer.sizing import Workload, estimate
from rightsizer.sizing.estimate import tail
from rightsizer.sizing.traffic import MAX_BINS, Lengths, max_rate, simulate

ROOT = Path(__file__).resolve().parents[1]
QWEN05 = ROOT / "tasks/examples/configs/qwen2.5-0.5b.json"


def constant(ms: float):
    return lambda d, ctx, c, prompt: ms


def test_a_length_histogram_is_bounded_and_keeps_the_means():
    rng = random.Random(0)
    prompts = [int(rng.lognormvariate(5, 1)) + 1 for _ in range(2000)]  # 20 to 2,000 tokens and more
    outputs = [rng.randint(1, 300) for _ in range(2000)]
    h = Lengths.from_samples(prompts, outputs, source="test")
    assert len(h.rows) <= MAX_BINS ** 2 and len(json.dumps(h.to_dict())) < 8000  # bounded in a record
    assert h.count == 2000
    assert h.mean(0) == pytest.approx(sum(prompts) / 2000, rel=0.05)
    assert h.mean(1) == pytest.approx(sum(outputs) / 2000, rel=0.05)
    s = h.summary()
    assert s["prompt_tokens"]["p50"] < s["prompt_tokens"]["p95"] <= s["prompt_tokens"]["max"]
    assert Lengths.from_dict(json.loads(json.dumps(h.to_dict()))) == h


def test_uniform_lengths_between_bounds_keep_the_range_and_its_mean():
    """``randint(100, 1024)`` lengths (nano-vllm's bench.py): every request in the range, the
    mean the range's, and a bad range is a clear error."""
    h = Lengths.uniform_between((100, 1024), (100, 1024), source="bench")
    assert h.count == 925 ** 2 and len(h.rows) <= MAX_BINS ** 2
    assert min(p for p, _, _ in h.rows) >= 100 and max(o for _, o, _ in h.rows) <= 1024
    assert h.mean(0) == pytest.approx(562, rel=0.01) and h.mean(1) == pytest.approx(562, rel=0.01)
    assert Lengths.uniform(558, 523).mean(0) == pytest.approx(558, rel=0.01)
    with pytest.raises(ConfigError, match=r"lengths \(bench\): range \[0, 10\]; expected 1 <= low <= high"):
        Lengths.uniform_between((0, 10), (1, 2), source="bench")


@pytest.mark.parametrize("data, match", [
    ({"histogram": [[20, 0, 3]]}, r"lengths\.histogram\[0\]: every length must be a positive integer, got 0"),
    ({"histogram": [[20, 4]]}, r"lengths\.histogram\[0\]: expected \[prompt_tokens, output_tokens, count\]"),
    ({"histogram": []}, r"lengths\.histogram: expected a list"),
    ({}, r"lengths\.histogram: expected a list"),
])
def test_a_bad_length_histogram_names_the_field(data, match):
    with pytest.raises(ConfigError, match=match):
        Lengths.from_dict(data, where="lengths")


def test_a_request_alone_takes_its_prompt_steps_then_one_step_per_token():
    # a trickle: no request meets another; a 3000-token prompt in 1024-token chunks takes 3 steps
    f = simulate(constant(10.0), Lengths.fixed(3000, 5), 0.01, token_budget=1024, max_seqs=64,
                 front_end_ms=7.0, requests=50)
    assert f.ttft_mean_ms == pytest.approx(3 * 10.0 + 7.0) and f.ttft_p95_ms == pytest.approx(37.0)
    assert f.tpot_mean_ms == pytest.approx(10.0) and not f.saturated


@pytest.mark.parametrize("rho", [0.3, 0.6])
def test_one_prompt_per_step_is_an_md1_queue(rho):
    """Output 1 and a budget of one prompt: each request is one step of fixed length s, served
    first come first served: an M/D/1 queue, whose mean wait is rho s / (2 (1 - rho))
    (Pollaczek-Khinchine). The simulation must agree."""
    s = 10.0
    rate = rho / (s / 1e3)
    f = simulate(constant(s), Lengths.fixed(100, 1), rate, token_budget=100, max_seqs=1, requests=6000, seed=1)
    expected = s + rho * s / (2 * (1 - rho))
    assert f.ttft_mean_ms == pytest.approx(expected, rel=0.08)
    assert f.ttft_p95_ms > f.ttft_mean_ms and not f.saturated
    assert f.busy == pytest.approx(rho, rel=0.08)


def test_varying_step_times_keep_the_mean_and_widen_the_tail():
    """``step_cv``: the same requests (arrivals seeded apart), each step's time varying around
    its value: mean TPOT about the same, the p95 wider; a negative cv is a clear error."""
    lengths = Lengths.fixed(20, 16)
    kw = dict(token_budget=512, max_seqs=64, requests=400)
    fixed = simulate(constant(2.0), lengths, 20.0, **kw)
    varying = simulate(constant(2.0), lengths, 20.0, step_cv=0.5, **kw)
    assert fixed.tpot_p95_ms == pytest.approx(2.0) and fixed.tpot_mean_ms == pytest.approx(2.0)
    assert varying.tpot_mean_ms == pytest.approx(2.0, rel=0.05) and varying.tpot_p95_ms > 2.2
    assert varying.ttft_p95_ms > fixed.ttft_p95_ms
    with pytest.raises(ConfigError, match="step_cv must be >= 0"):
        simulate(constant(2.0), lengths, 20.0, step_cv=-0.1, **kw)


def test_a_rate_above_capacity_is_saturated():
    f = simulate(constant(10.0), Lengths.fixed(100, 1), 130.0, token_budget=100, max_seqs=1, requests=2000)
    assert f.saturated


def test_max_rate_meets_the_target_and_a_little_more_does_not():
    def at(rate):
        return simulate(constant(10.0), Lengths.fixed(100, 1), rate, token_budget=100, max_seqs=1, requests=3000)
    r, fig = max_rate(at, ttft_ms=40.0, tpot_ms=1e9, start=5.0, iterations=8)
    assert fig is not None and fig.meets(40.0, 1e9) and 20 < r < 100
    assert not at(r * 1.15).meets(40.0, 1e9)
    assert max_rate(at, ttft_ms=5.0, tpot_ms=1e9, start=5.0) == (0.0, None)  # one step alone is 10 ms


def test_tail_on_an_estimate_grows_with_the_rate_and_saturates_past_max_throughput():
    est = estimate(str(QWEN05), "H100-SXM", Workload(512, 128, 8))
    low = tail(est, 0.05)  # a trickle: a request alone (its life is ~0.15 s)
    assert low.ttft_p95_ms == pytest.approx(estimate(str(QWEN05), "H100-SXM", Workload(512, 128, 1)).ttft_ms,
                                            rel=0.05)
    max_rps = est.max_throughput_tokens_per_s / 128
    mid, high = tail(est, 0.5 * max_rps), tail(est, 1.3 * max_rps)
    assert mid.tpot_p95_ms > low.tpot_p95_ms and mid.ttft_p95_ms > low.ttft_p95_ms and not mid.saturated
    assert high.saturated
    # the same seed gives the same figures (no machine's floating point in them beyond the roofline's)
    assert tail(est, 0.5 * max_rps).to_dict() == mid.to_dict()


def _size(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rightsizer", "size", "--config", str(QWEN05), "--gpu", "H100-SXM",
                           "--prompt-tokens", "512", "--output-tokens", "128", *args],
                          capture_output=True, text=True, cwd=ROOT)


def test_size_reports_mean_and_p95_at_a_request_rate(tmp_path):
    hist = tmp_path / "lengths.json"
    hist.write_text(json.dumps({"histogram": [[20, 8, 30], [400, 64, 10], [2000, 200, 2]], "source": "test"}))
    out = _size("--request-rate", "50", "--lengths", str(hist), "--json")
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    for k in ("ttft_mean_ms", "ttft_p95_ms", "tpot_mean_ms", "tpot_p95_ms"):
        assert math.isfinite(d[k]) and d[k] > 0
    assert d["ttft_p95_ms"] >= d["ttft_mean_ms"] * 0.9 and d["lengths"]["requests"] == 42
    text = _size("--request-rate", "50")
    assert text.returncode == 0 and "at 50 req/s (Poisson" in text.stdout


@pytest.mark.parametrize("args, message", [
    (("--request-rate", "-3"), "--request-rate must be a positive number of requests/s, got -3.0"),
    (("--lengths", "x.json"), "--lengths needs --request-rate"),
    (("--request-rate", "5", "--lengths", "missing.json"), "length histogram file not found: missing.json"),
])
def test_size_bad_traffic_arguments_are_clear_errors(args, message):
    out = _size(*args)
    assert out.returncode != 0 and message in out.stderr


def test_the_fleet_plan_states_the_rate_each_group_holds():
    out = subprocess.run([sys.executable, "-m", "rightsizer", "plan", "--app", "tasks/examples/support_hub.yaml",
                          "--json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    for fleet in (plan, plan["baseline"]):
        for g in fleet["groups"]:
            h = g["holds"]
            names = {m["name"] for m in g["models"]}
            assert {m["name"] for m in h["members"]} == names
            # planned at 0.8 headroom: every group holds its planned traffic, with room to spare
            assert h["meets_planned"] and h["scale"] >= 1 and h["request_rate"] >= h["planned_request_rate"]
            planned = sum(m["throughput_tokens_per_s"] / d["output_tokens"]
                          for m in g["models"] for d in fleet["demands"] if d["name"] == m["name"])
            assert h["planned_request_rate"] == pytest.approx(planned)


def test_the_decision_record_keeps_the_lengths_and_the_p95_at_the_planned_rate(sentiment_spec):
    """size_gpu's record: the task's length histogram (the spec's, when it gives one) and each
    side's mean and p95 at the planned request rate (the spec's, else throughput over the
    mean output), with the rate one replica holds within the p95 targets."""
    import dataclasses

    from test_fleet import TINY_L, TINY_S, _record

    rec = _record(sentiment_spec, TINY_S, TINY_L)
    t = rec["traffic"]
    assert t["request_rate"] == pytest.approx(sentiment_spec.slo.throughput_tokens_per_s
                                              / sentiment_spec.workload.output_tokens)
    for side in ("chosen", "baseline"):
        s = t[side]
        assert s["ttft_p95_ms"] > 0 and s["tpot_p95_ms"] > 0 and s["meets_p95"] is True
        assert s["max_rate_per_replica"] >= s["per_replica_rate"]
    assert rec["workload"]["lengths"]["source"].startswith("typical")
    wl = dataclasses.replace(sentiment_spec.workload, request_rate=3.0, lengths=[[40, 2, 5], [200, 6, 1]])
    rec = _record(dataclasses.replace(sentiment_spec, workload=wl), TINY_S, TINY_L)
    assert rec["traffic"]["request_rate"] == 3.0 and rec["traffic"]["chosen"]["per_replica_rate"] == 3.0
    assert rec["workload"]["lengths"]["source"] == "spec (workload.lengths)"
    assert rec["workload"]["lengths"]["histogram"] == [[40, 2, 5], [200, 6, 1]]


def test_recommend_holds_the_p95_targets_at_a_request_rate_with_replicas():
    """``recommend(..., traffic=)``: the chosen option has the replicas that hold the rate within
    the p95 targets (vLLM 0.19's front end caps a replica near 89 requests/s, so 200 requests/s
    of a 0.5 B model needs at least three); an option that misses the targets at any rate is
    infeasible and says so; the closed loop alone would have taken one replica."""
    from rightsizer.sizing import SLO, Factors, Traffic, recommend
    from rightsizer.sizing.estimate import tail

    factors = Factors.defaults().for_engine("vllm-0.19")
    wl = Workload(256, 64, 1, "bf16")
    slo = SLO(ttft_ms=200, tpot_ms=30)
    closed = recommend(str(QWEN05), wl, slo, factors=factors, gpus=["L4"], include_mig=False)
    assert closed.chosen.replicas == 1 and closed.chosen.held_rate_per_replica is None
    rec = recommend(str(QWEN05), wl, slo, factors=factors, gpus=["L4"], include_mig=False,
                    traffic=Traffic(200.0, Lengths.fixed(256, 64)))
    c = rec.chosen
    assert c.replicas >= 3 and c.held_rate_per_replica * c.replicas >= 200
    assert c.held_rate_per_replica < 1000 / factors.front_end_ms
    assert tail(c.estimate, 200 / c.replicas).meets(slo.ttft_ms, slo.tpot_ms)
    assert c.price_per_hour == pytest.approx(closed.chosen.price_per_hour * c.replicas)
    # the typical 256-token prompt meets a 60 ms TTFT; one request in five with 16,000 tokens
    # puts the p95 past it at any rate (its prefill alone is longer)
    tight = SLO(ttft_ms=60, tpot_ms=30)
    assert recommend(str(QWEN05), wl, tight, factors=factors, gpus=["L4"], include_mig=False).chosen.ttft_ms < 60
    with pytest.raises(NoFeasibleOption) as exc:
        recommend(str(QWEN05), wl, tight, factors=factors, gpus=["L4"], include_mig=False,
                  traffic=Traffic(5.0, Lengths(((256, 64, 8), (16000, 64, 2)))))
    assert all("misses p95 TTFT 60 ms / TPOT 30 ms at any rate" in o.reason for o in exc.value.options if o.fits)
    with pytest.raises(ConfigError, match="request_rate must be a positive number of requests/s, got 0"):
        Traffic(0)


def test_recommend_cli_takes_a_request_rate():
    out = subprocess.run([sys.executable, "-m", "rightsizer", "recommend", "--config", str(QWEN05),
                          "--prompt-tokens", "256", "--output-tokens", "64", "--ttft-ms", "200", "--tpot-ms", "30",
                          "--gpus", "L4", "--serving-engine", "vllm-0.19", "--request-rate", "200"],
                         capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "at 200 requests/s arriving at random" in out.stdout and "one replica holds" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "rightsizer", "recommend", "--config", str(QWEN05), "--ttft-ms", "200",
                          "--prompt-tokens", "256", "--output-tokens", "64", "--tpot-ms", "30", "--lengths", "x.json"],
                         capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode != 0 and "--lengths needs --request-rate" in bad.stderr


def test_the_open_loop_benchmark_refits_on_figures_measured_before():
    """``bench_open_loop.py --from-json``: no server, the saved measurements (docs/sizing.md's
    table) refitted with the six parameters and compared at the held-out rates."""
    out = subprocess.run([sys.executable, "benchmarks/bench_open_loop.py", "--from-json",
                          "benchmarks/data/open_loop_measured.json"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "step_cv" in out.stdout and out.stdout.count("| held out |") == 12
    assert "held-out mean absolute error" in out.stdout
    assert "rerun: .venv/bin/python benchmarks/bench_open_loop.py --from-json" in out.stdout
