"""Published measured latencies on named GPUs: the estimate (default factors) must land within
+-30%. Each row names its source; docs/sizing.md carries the same table with the errors.

Rows marked "fit" informed a default factor (quant_memory_efficiency in gpus.yaml); the rest
are held out. Decode at batch 1 is reported as tokens/s in the sources: TPOT = 1000 / tok/s.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rightsizer.sizing import Workload, estimate

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
GPT_FAST = "https://github.com/pytorch-labs/gpt-fast#benchmarks (A100-80GB power-limited 330 W, batch 1, 5-token prompt)"
VLLM_A100 = "https://johnmusgrave.com/p/vllm-throughput-latency-sweep-on (vLLM 0.23, 1024 in / 128 out, concurrency 1, ~75 tok/s)"
VLLM_H100 = ("https://yobitelcomm.github.io/bench/recipes/concurrency-sweep/ (vLLM 0.21, H100-80GB-HBM3, "
             "concurrency 1, tpot_p50 6.48 ms; prompt length of chatbot-short assumed ~100 tokens)")

# (id, config, gpu, count, precision, prompt, output, measured TPOT ms, source, role)
MEASURED = [
    ("gptfast-7b-bf16", "llama-2-7b", "A100-80GB", 1, "bf16", 5, 200, 1000 / 104.9, GPT_FAST, "held out"),
    ("gptfast-7b-int8", "llama-2-7b", "A100-80GB", 1, "int8", 5, 200, 1000 / 155.58, GPT_FAST, "fit"),
    ("gptfast-7b-int4", "llama-2-7b", "A100-80GB", 1, "int4-g32", 5, 200, 1000 / 196.80, GPT_FAST, "fit"),
    ("gptfast-70b-int8", "llama-2-70b", "A100-80GB", 1, "int8", 5, 200, 1000 / 19.13, GPT_FAST, "held out"),
    ("gptfast-70b-int4", "llama-2-70b", "A100-80GB", 1, "int4-g32", 5, 200, 1000 / 25.25, GPT_FAST, "held out"),
    ("gptfast-7b-tp2", "llama-2-7b", "A100-80GB", 2, "bf16", 5, 200, 1000 / 168.84, GPT_FAST, "held out"),
    ("gptfast-7b-tp8", "llama-2-7b", "A100-80GB", 8, "bf16", 5, 200, 1000 / 328.43, GPT_FAST, "held out"),
    ("gptfast-70b-tp2", "llama-2-70b", "A100-80GB", 2, "bf16", 5, 200, 1000 / 21.32, GPT_FAST, "held out"),
    ("gptfast-70b-tp4", "llama-2-70b", "A100-80GB", 4, "bf16", 5, 200, 1000 / 38.01, GPT_FAST, "held out"),
    ("gptfast-70b-tp8", "llama-2-70b", "A100-80GB", 8, "bf16", 5, 200, 1000 / 62.50, GPT_FAST, "held out"),
    ("vllm-8b-a100-40gb", "llama-3.1-8b", "A100-40GB", 1, "bf16", 1024, 128, 1000 / 75.0, VLLM_A100, "held out"),
    ("vllm-8b-h100", "llama-3.1-8b", "H100-SXM", 1, "bf16", 100, 200, 6.48, VLLM_H100, "held out"),
]


def predicted_tpot(row) -> float:
    _, cfg, gpu, count, prec, prompt, output, *_ = row
    return estimate(str(CONFIGS / f"{cfg}.json"), gpu, Workload(prompt, output, 1, prec), count=count).tpot_ms


@pytest.mark.parametrize("row", MEASURED, ids=[r[0] for r in MEASURED])
def test_published_measurement_within_30_percent(row):
    measured = row[7]
    predicted = predicted_tpot(row)
    assert abs(predicted / measured - 1) <= 0.30, f"{row[0]}: predicted {predicted:.2f} ms vs {measured:.2f} ms"


def test_enough_held_out_rows_on_named_gpus():
    held = [r for r in MEASURED if r[9] == "held out"]
    assert len(held) >= 5
    assert {r[2] for r in held} >= {"A100-80GB", "A100-40GB", "H100-SXM"}
    assert all(r[8].startswith("https://") for r in MEASURED)


def test_pure_roofline_is_optimistic():
    """Pure roofline (100% of peak, no overhead) underestimates every measured latency."""
    from rightsizer.sizing import Factors

    for row in MEASURED:
        _, cfg, gpu, count, prec, prompt, output, measured, *_ = row
        est = estimate(str(CONFIGS / f"{cfg}.json"), gpu, Workload(prompt, output, 1, prec), count=count,
                       factors=Factors.roofline())
        assert est.mode == "roofline"
        assert est.tpot_ms < measured, row[0]


# --------------------------------------------------------------------------- the public measurements table
# benchmarks/data/sizing_accuracy.yaml (127 rows, 8 sources); benchmarks/bench_sizing_accuracy.py prints it.
# The targets are held-out MAE <= 15 % (TTFT) and <= 10 % (max throughput); today's estimator
# reaches 8.8 % (TTFT), 5.0 % (TPOT) and 9.1 % (max throughput) on the models above the 3 B class
# (docs/sizing.md, "How accurate"): all meet their targets, and these bounds hold them where they are.
HELD_OUT_BOUNDS = {"ttft_ms": 0.14, "tpot_ms": 0.055, "max_throughput_tokens_per_s": 0.095}
# The 3 B class and under (added with the host costs, 2026-12-07): the held-out TPOT and max
# throughput within 15 %; TTFT is 38 % (the L4 closed-loop rows' server time and SGLang, which has
# no host costs of its own: docs/sizing.md), so it is held to its figure, and every held-out metric
# is better with each engine's host costs than without any.
SMALL_HELD_OUT_BOUNDS = {"ttft_ms": 0.40, "tpot_ms": 0.15, "max_throughput_tokens_per_s": 0.15}


@pytest.fixture(scope="module")
def table():
    import json

    from rightsizer.sizing.accuracy import load_rows
    from rightsizer.sizing.accuracy import evaluate as evaluate_rows

    rows = load_rows()
    aic_file = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "aic_estimates.json"
    aic = {r["id"]: r.get("value") for r in json.loads(aic_file.read_text(encoding="utf-8"))}
    return evaluate_rows(rows), aic


def test_held_out_measurements_stay_within_the_bounds(table):
    from rightsizer.sizing.accuracy import summary

    results, _ = table
    s = summary(results, size="big")
    for metric, bound in HELD_OUT_BOUNDS.items():
        assert s[metric]["held_out"]["rows"] >= 10
        assert s[metric]["held_out"]["mae"] <= bound, (metric, s[metric]["held_out"])


def test_small_models_held_out_within_bounds_and_better_with_host_costs(table):
    from dataclasses import replace

    from rightsizer.sizing import Factors
    from rightsizer.sizing.accuracy import SMALL_PARAMS, evaluate, summary
    from rightsizer.sizing.calibration import HOST_COSTS

    results, _ = table
    s = summary(results, size="small")
    small = [r.row for r in results if r.row.params < SMALL_PARAMS]
    without = summary(evaluate(small, replace(Factors.defaults(), engine_host_costs={},
                                              **{k: 0.0 for k in HOST_COSTS})), size="small")
    # saturated throughput held out on 4 vLLM rows (other GPUs, vLLM versions and a model the fit
    # never saw) and SGLang's Llama-3.2-3B
    assert s["max_throughput_tokens_per_s"]["held_out"]["rows"] >= 5 and s["ttft_ms"]["held_out"]["rows"] >= 10
    for metric, bound in SMALL_HELD_OUT_BOUNDS.items():
        assert s[metric]["held_out"]["mae"] <= bound, (metric, s[metric]["held_out"])
        assert s[metric]["held_out"]["mae"] < without[metric]["held_out"]["mae"], metric
    # the burst that measured the front end's cap: 2.2x over-predicted without it
    burst = next(r for r in results if r.row.id == "kvcached-h100-sxm-qwen3-0.6b-bf16-maxtput-512-128")
    assert abs(burst.error) < 0.15


def test_no_worse_than_aiconfigurator_on_the_rows_it_estimates(table):
    results, aic = table
    for metric in ("ttft_ms", "max_throughput_tokens_per_s"):
        both = [r for r in results if r.row.metric == metric and r.row.split == "held_out" and aic.get(r.row.id)]
        assert len(both) >= 8
        ours = sum(abs(r.error) for r in both) / len(both)
        theirs = sum(abs(aic[r.row.id] / r.row.value - 1) for r in both) / len(both)
        assert ours <= theirs, (metric, ours, theirs)


def test_held_out_rows_did_not_inform_the_fitted_factors():
    """The factors fitted on the table name the rows they came from; held-out rows stay out of fit_factors."""
    from rightsizer.sizing import Factors
    from rightsizer.sizing.accuracy import Row, fit_factors

    held = Row("x", "s", "llama-3.1-8b", "H100-SXM", 1, "fp8", None, 128, 128, "tpot_ms", 1.0, "held_out")
    with pytest.raises(Exception, match="no rows with split: fit"):
        fit_factors([held], Factors.defaults())
    assert "fit' rows of benchmarks/data/sizing_accuracy.yaml" in Factors.defaults().sources["compute_efficiency"]
