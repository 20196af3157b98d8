"""Recommendation: cheapest feasible option first, honest rejections, actionable failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from rightsizer.errors import ConfigError, InsufficientMemory, NoFeasibleOption
from rightsizer.sizing import SLO, Workload, load_catalog, recommend, roofline_figure

CONFIGS = Path(__file__).parent / "fixtures" / "configs"
LLAMA8 = str(CONFIGS / "llama-3.1-8b.json")
SEVENTY = str(CONFIGS / "llama-2-70b.json")


def test_chosen_is_cheapest_feasible_and_ranked_first():
    rec = recommend(LLAMA8, Workload(1024, 256, 1), SLO(ttft_ms=500, tpot_ms=30))
    assert rec.options[0] is rec.chosen and rec.chosen.feasible
    feasible = rec.feasible
    assert all(a.price_per_hour <= b.price_per_hour for a, b in zip(feasible, feasible[1:]))
    assert rec.chosen.price_per_hour == min(o.price_per_hour for o in feasible)
    # infeasible options come after all feasible ones and say why
    first_bad = next(i for i, o in enumerate(rec.options) if not o.feasible)
    assert all(not o.feasible and o.reason for o in rec.options[first_bad:])
    c = rec.chosen
    assert c.ttft_ms <= 500 and c.tpot_ms <= 30 and c.fits and c.mode == "default-factors"
    assert c.cost_per_1m_output_tokens == pytest.approx(
        c.price_per_hour / (c.throughput_tokens_per_s * 3600) * 1e6)
    for key in ("gpu", "count", "mig", "precision", "fits", "meets_slo", "ttft_ms", "tpot_ms",
                "throughput_tokens_per_s", "price_per_hour", "cost_per_1m_output_tokens", "memory_bytes",
                "reason", "mode"):
        assert hasattr(c, key)
    rows = rec.to_rows()
    assert rows[0]["rank"] == 1 and rows[0]["feasible"] and len(rows) == len(rec.options)
    assert rec.to_dict()["chosen"] == c.to_dict()


def test_option_space_covers_counts_mig_and_precisions():
    rec = recommend(LLAMA8, Workload(1024, 256, 1), SLO(ttft_ms=10_000, tpot_ms=1_000))
    # every GPU the price list offers (a device it does not price is not an option)
    assert {o.gpu for o in rec.options} == {g.name for g in load_catalog().priced()}
    assert rec.price_list["name"] == load_catalog().price_list_name and rec.to_dict()["price_list"]
    assert any(o.mig for o in rec.options) and {o.precision for o in rec.options} >= {"bf16", "fp8", "int8", "int4"}
    # T4 has no bf16: it is tried in fp16; fp8 is rejected with the reason
    t4 = [o for o in rec.options if o.gpu == "T4"]
    assert any(o.precision == "fp16" for o in t4)
    assert any(o.precision == "fp8" and "lacks fp8" in o.reason for o in t4)
    no_mig = recommend(LLAMA8, Workload(1024, 256, 1), SLO(10_000, 1_000), include_mig=False)
    assert not any(o.mig for o in no_mig.options)


def test_tight_tpot_needs_a_faster_gpu():
    loose = recommend(LLAMA8, Workload(512, 128), SLO(1000, 100), precisions=["bf16"], include_mig=False)
    tight = recommend(LLAMA8, Workload(512, 128), SLO(1000, 8), precisions=["bf16"], include_mig=False)
    assert tight.chosen.tpot_ms <= 8 < loose.chosen.tpot_ms
    assert tight.chosen.price_per_hour > loose.chosen.price_per_hour


def test_throughput_target_uses_batch_then_replicas():
    rec = recommend(LLAMA8, Workload(512, 128, 1), SLO(2000, 50, throughput_tokens_per_s=3000),
                    gpus=["L4"], precisions=["int4"], include_mig=False)
    c = rec.chosen
    assert c.throughput_tokens_per_s >= 3000 and c.batch > 1
    assert c.price_per_hour == pytest.approx(load_catalog().get("L4").price_per_hour * c.count * c.replicas)


def test_budget_excludes_expensive_options():
    rec = recommend(LLAMA8, Workload(512, 128), SLO(1000, 50, budget_per_hour=1.0))
    assert rec.chosen.price_per_hour <= 1.0
    assert any("budget" in o.reason for o in rec.options)


def test_prices_can_be_overridden():
    cat = load_catalog(extra=[{"name": "H200", "price_per_hour": 0.01}])
    rec = recommend(LLAMA8, Workload(512, 128), SLO(1000, 50), catalog=cat, include_mig=False)
    assert rec.chosen.gpu == "H200"


def test_nothing_meets_the_slo_is_an_expected_actionable_error():
    with pytest.raises(NoFeasibleOption) as exc:
        recommend(SEVENTY, Workload(2048, 256, 1), SLO(ttft_ms=5, tpot_ms=1))
    msg = str(exc.value)
    assert "no option meets TTFT <= 5 ms, TPOT <= 1 ms" in msg
    assert "relax to" in msg and "closest" in msg and "fit in memory" in msg
    assert not isinstance(exc.value, InsufficientMemory)
    assert exc.value.options


def test_nothing_fits_raises_insufficient_memory():
    with pytest.raises(InsufficientMemory, match="does not fit on any option.*int4"):
        recommend(SEVENTY, Workload(2048, 256, 1), SLO(1000, 100), gpus=["T4"], precisions=["bf16"])


def test_seventy_b_on_one_a100_suggests_more_gpus_or_int4():
    with pytest.raises(NoFeasibleOption) as exc:
        recommend(SEVENTY, Workload(1024, 256, 1), SLO(1000, 100, budget_per_hour=6.0), gpus=["A100-80GB"],
                  precisions=["bf16"], include_mig=False)
    msg = str(exc.value)
    # "needs 2x A100-80GB or int4", spelled out with the numbers
    price = load_catalog().get("A100-80GB").price_per_hour
    assert "2x A100-80GB bf16" in msg and f"budget >= ${2 * price:.2f}/h" in msg
    assert "int4 fits on 1x A100-80GB" in msg


def test_unpriced_gpu_is_not_an_option_unless_priced():
    with pytest.raises(ConfigError, match="MI300X has no price in price list aws-on-demand-us-east-1"):
        recommend(LLAMA8, Workload(512, 128), SLO(1000, 50), gpus=["MI300X"])
    cat = load_catalog(extra=[{"name": "MI300X", "price_per_hour": 2.0}])
    rec = recommend(LLAMA8, Workload(512, 128), SLO(1000, 50), catalog=cat, gpus=["MI300X"], include_mig=False)
    assert rec.chosen.gpu == "MI300X" and rec.chosen.price_per_hour == pytest.approx(2.0 * rec.chosen.count)
    # under another list the offer changes: Lambda sells H100-PCIe, AWS does not
    lam = recommend(LLAMA8, Workload(512, 128), SLO(1000, 50), catalog=load_catalog(price_list="lambda-on-demand"))
    assert {o.gpu for o in lam.options} == {g.name for g in load_catalog(price_list="lambda-on-demand").priced()}
    assert lam.price_list["name"] == "lambda-on-demand"


def test_cpu_instances_are_options_on_request():
    small = str(CONFIGS / "smollm2-135m.json")
    rec = recommend(small, Workload(64, 4, 1), SLO(2000, 200), include_cpu=True)
    cpus = {c.name for c in load_catalog().cpus}
    assert cpus <= {o.gpu for o in rec.options}
    assert not cpus & {o.gpu for o in recommend(small, Workload(64, 4, 1), SLO(2000, 200)).options}


def test_bad_input():
    with pytest.raises(ConfigError) as exc:
        SLO(ttft_ms=0, tpot_ms=-1, throughput_tokens_per_s=-5, budget_per_hour=0)
    assert len(exc.value.problems) == 4
    with pytest.raises(ConfigError, match="unknown precision"):
        recommend(LLAMA8, Workload(1, 1), SLO(1, 1), precisions=["bf17"])
    with pytest.raises(ConfigError, match="known GPUs"):
        recommend(LLAMA8, Workload(1, 1), SLO(1, 1), gpus=["V100"])


def test_figure_from_recommendation():
    rec = recommend(LLAMA8, Workload(1024, 256, 1), SLO(500, 30))
    fig = roofline_figure(rec)
    assert any(t.name.endswith("decode") for t in fig.data)
