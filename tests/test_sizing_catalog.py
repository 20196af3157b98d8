"""The device catalog: every GPU and CPU entry validated and plausible; errors list every problem.
Prices come from one price list per catalog."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

import math

from rightsizer.errors import ConfigError
from rightsizer.sizing import Workload, estimate, load_catalog
from rightsizer.sizing.catalog import DEFAULT_CATALOG_PATH
from rightsizer.sizing.prices import DEFAULT_PRICE_LIST, available_price_lists, load_price_list

EXPECTED = ["T4", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "MI300X"]

# Public datasheet figures (dense): (memory GB marketing, bandwidth GB/s, bf16-or-fp16 TFLOP/s)
DATASHEET = {
    "T4": (16, 320, 65), "A10G": (24, 600, 70), "L4": (24, 300, 121), "L40S": (48, 864, 362),
    "A100-40GB": (40, 1555, 312), "A100-80GB": (80, 2039, 312), "H100-SXM": (80, 3350, 989),
    "H100-PCIe": (80, 2000, 756), "H200": (141, 4800, 989), "MI300X": (192, 5300, 1307),
}


CONFIG = Path(__file__).parent / "fixtures" / "configs" / "qwen2.5-0.5b.json"


def raw_catalog():
    with open(DEFAULT_CATALOG_PATH, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def test_packaged_catalog_has_every_gpu():
    cat = load_catalog()
    assert cat.names == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_entry_is_plausible_and_sourced(name):
    gpu = load_catalog().get(name)
    mem_gb, bw, tf = DATASHEET[name]
    assert 0.9 * mem_gb * 1e9 <= gpu.memory_bytes <= 1.1 * mem_gb * 2**30
    assert gpu.memory_bandwidth == pytest.approx(bw * 1e9, rel=0.01)
    assert (gpu.bf16_flops or gpu.fp16_flops) == pytest.approx(tf * 1e12, rel=0.01)
    assert gpu.int8_flops >= gpu.fp16_flops
    # priced by the default list where that provider sells it, else not offered under it
    in_list = name in load_price_list(DEFAULT_PRICE_LIST).prices
    assert gpu.priced == in_list
    if in_list:
        assert 0.2 < gpu.price_per_hour < 20 and gpu.price_source.startswith("http")
        assert gpu.price_list == DEFAULT_PRICE_LIST
    else:
        assert math.isnan(gpu.price_per_hour)
    assert gpu.spec_source.startswith("http")
    cc = float(gpu.compute_capability) if gpu.compute_capability else None
    if cc is not None:
        assert gpu.supports("flash_attention_2") == (cc >= 8.0)
        assert gpu.supports("fp8") == (cc >= 8.9) == (gpu.fp8_flops > 0)
        assert gpu.supports("mig") == (name.startswith(("A100", "H100", "H200")))
    for prof in gpu.mig_profiles:
        assert prof.memory_bytes <= gpu.memory_bytes and 0 < prof.compute_fraction <= 1


def test_feature_limits():
    cat = load_catalog()
    assert not cat.get("T4").supports("bf16") and cat.get("T4").supports("bnb")
    assert not cat.get("A100-80GB").supports("fp8") and cat.get("L4").supports("fp8")
    assert cat.get("MI300X").supports("fp8") and not cat.get("MI300X").supports("mig")
    assert [p.name for p in cat.get("H200").mig_profiles] == ["1g.18gb", "1g.35gb", "2g.35gb", "3g.71gb",
                                                              "4g.71gb", "7g.141gb"]


def test_lookup_by_alias_and_unknown_lists_names():
    cat = load_catalog()
    assert cat.get("h100 sxm").name == "H100-SXM"
    assert cat.get("a100_80gb").name == "A100-80GB"
    with pytest.raises(ConfigError) as exc:
        cat.get("B200")
    for name in EXPECTED:
        assert name in str(exc.value)


def test_mig_slice_view():
    gpu = load_catalog().get("A100-80GB")
    s = gpu.slice("3g.40gb")
    assert s.memory_bytes == 40_000_000_000 and s.mig == "3g.40gb"
    assert s.bf16_flops == pytest.approx(gpu.bf16_flops * 3 / 7, rel=1e-4)
    assert s.memory_bandwidth == pytest.approx(gpu.memory_bandwidth / 2)
    assert s.price_per_hour == pytest.approx(gpu.price_per_hour * 3 / 7, rel=1e-4)
    with pytest.raises(ConfigError, match="1g.10gb"):
        gpu.slice("5g.50gb")
    with pytest.raises(ConfigError, match="no MIG"):
        load_catalog().get("L4").slice("1g.5gb")


def test_every_price_list_loads_and_prices_only_catalog_devices():
    names = available_price_lists()
    assert DEFAULT_PRICE_LIST in names and len(names) >= 2
    for name in names:
        plist = load_price_list(name)
        assert plist.source.startswith("http") and plist.date[:2] == "20"
        cat = load_catalog(price_list=name)
        assert cat.price_list_name == name == plist.name
        priced = {d.name for d in cat.priced(include_cpu=True)}
        assert priced == set(plist.prices)
        for d in cat.priced(include_cpu=True):
            assert d.price_per_hour == plist.prices[d.name].price_per_hour


def test_price_override_and_user_gpu(tmp_path):
    custom = {"name": "RTX-4090", "vendor": "nvidia", "compute_capability": "8.9",
              "memory_bytes": 24 * 2**30, "memory_bandwidth": 1.008e12, "bf16_flops": 165e12,
              "fp16_flops": 165e12, "int8_flops": 330e12, "fp8_flops": 330e12, "fp32_flops": 82.6e12,
              "host_link_bandwidth": 32e9, "interconnect_bandwidth": 32e9, "price_per_hour": 0.6}
    cat = load_catalog(extra=[{"name": "h100-sxm", "price_per_hour": 2.5}, custom])
    assert cat.get("H100-SXM").price_per_hour == 2.5 and cat.get("H100-SXM").price_source == "user override"
    assert cat.get("RTX-4090").supports("fp8") and cat.get("RTX-4090").price_source == "user"
    assert len(cat) == 11
    # A catalog file of one's own
    data = raw_catalog()
    data["gpus"] = [custom | {"price_source": "mine"}]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_catalog(str(path)).names == ["RTX-4090"]
    cheap = load_catalog().with_prices({"T4": 0.35})
    assert cheap.get("T4").price_per_hour == 0.35
    # the others keep the list's prices, and the list is still named
    assert cheap.get("L4").price_per_hour == load_catalog().get("L4").price_per_hour
    assert cheap.price_list_name == DEFAULT_PRICE_LIST and cheap.get("c7i.8xlarge").priced


def test_cpu_instances_load_and_estimate_finite():
    cat = load_catalog()
    assert len(cat.cpus) >= 3 and all(c.is_cpu and c.vcpus > 0 for c in cat.cpus)
    assert not any(c.is_cpu for c in cat)  # iteration (what recommend ranks by default) is the GPUs
    for cpu in cat.cpus:
        assert cpu.spec_source.startswith("http") and cpu.memory_bytes >= 8 * 2**30
        assert 1e10 < cpu.memory_bandwidth < 1e12 and 1e11 < cpu.fp32_flops <= cpu.bf16_flops
        assert not cpu.supports("fp8") and not cpu.supports("mig") and cpu.max_count == 1
        est = estimate(str(CONFIG), cpu, Workload(128, 16, 2))
        for value in (est.ttft_ms, est.tpot_ms, est.throughput_tokens_per_s, est.price_per_hour,
                      est.cost_per_1m_output_tokens):
            assert math.isfinite(value) and value > 0
        # decode of a 1B-class model on a CPU is bandwidth-bound: weights / bandwidth at least
        assert est.tpot_ms >= est.weights_bytes / cpu.memory_bandwidth * 1e3
        assert est.mode == "default-factors" and est.fits


def test_cpu_validation_names_each_problem(tmp_path):
    data = raw_catalog()
    data["cpus"] = [{"name": "bad-cpu", "vcpus": 0, "memory_bytes": 2**34, "fp32_flops": -1, "colour": 1},
                    {"name": "c7i.8xlarge", "vcpus": 4, "memory_bytes": 2**34, "memory_bandwidth": 1e11,
                     "fp32_flops": 1e12, "spec_source": "x", "price_per_hour": -2, "price_source": "me"}]
    path = tmp_path / "cpus.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_catalog(str(path), price_list=None)
    text = str(exc.value)
    for needle in ("CPU bad-cpu: vcpus must be a positive number", "CPU bad-cpu: missing required field "
                   "'memory_bandwidth'", "CPU bad-cpu: fp32_flops", "CPU bad-cpu: unknown field 'colour'",
                   "CPU bad-cpu: spec_source is required", "CPU c7i.8xlarge: price_per_hour must be a number >= 0"):
        assert needle in text, needle


def test_mig_price_follows_the_lists_rule(tmp_path):
    for name in available_price_lists():
        cat = load_catalog(price_list=name)
        for gpu in cat.priced():
            for prof in gpu.mig_profiles:
                assert load_price_list(name).mig_rule == "compute_share"
                g = int(prof.name.split("g.")[0])
                assert gpu.slice(prof.name).price_per_hour == pytest.approx(gpu.price_per_hour * g / 7, rel=1e-4)
    # a list of one's own with the memory rule prices a slice by its share of the memory
    own = tmp_path / "mine.yaml"
    own.write_text(yaml.safe_dump({"name": "mine", "date": "2026-01-02", "source": "user", "mig_rule": "memory_share",
                                   "prices": {"A100-80GB": {"price_per_hour": 2.0}}}))
    gpu = load_catalog(price_list=str(own)).get("A100-80GB")
    assert gpu.slice("3g.40gb").price_per_hour == pytest.approx(2.0 * 40e9 / gpu.memory_bytes)


def test_unknown_list_and_bad_prices_name_the_file_and_field(tmp_path):
    with pytest.raises(ConfigError) as exc:
        load_catalog(price_list="gcp-spot-mars")
    assert "unknown price list 'gcp-spot-mars'" in str(exc.value)
    assert DEFAULT_PRICE_LIST in str(exc.value) and "gcp-spot-mars.yaml" in str(exc.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "date": "2026-13-01", "source": "https://x", "mig_rule": "magic",
                                   "prices": {"L4": {"price_per_hour": -0.5}, "T4": {"instance": "g4dn"},
                                              "Z9": {"price_per_hour": 1.0}}}))
    with pytest.raises(ConfigError) as exc:
        load_price_list(str(bad))
    text = str(exc.value)
    assert str(bad) in text
    for needle in ("prices.L4.price_per_hour: must be a number >= 0", "prices.T4.price_per_hour: missing",
                   "'date' must be YYYY-MM-DD", "'mig_rule' must be one of"):
        assert needle in text, needle
    # a device the catalog does not know
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({"name": "u", "date": "2026-01-01", "source": "https://x",
                                       "prices": {"Z9": 1.0}}))
    with pytest.raises(ConfigError, match=r"prices.Z9: device 'Z9' is not in the catalog") as exc:
        load_catalog(price_list=str(unknown))
    assert str(unknown) in str(exc.value)


def test_validation_reports_every_problem(tmp_path):
    data = raw_catalog()
    gpus = copy.deepcopy(data["gpus"])
    gpus[0]["memory_bandwidth"] = -1  # T4
    del gpus[1]["fp32_flops"]  # A10G
    gpus[2]["fp8_flops"] = 0  # L4 supports fp8 but no peak given
    gpus[3]["colour"] = "green"  # L40S unknown field
    gpus[4]["mig_profiles"][0]["compute_fraction"] = 2  # A100-40GB
    gpus[5]["name"] = "A100-40GB"  # duplicate
    gpus[0]["compute_capability"] = "7.5"
    gpus[0]["mig_profiles"] = [{"name": "1g.5gb", "memory_bytes": 1, "compute_fraction": 0.5,
                                "bandwidth_fraction": 0.5, "max_instances": 1}]
    data["gpus"] = gpus
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as exc:
        load_catalog(str(path))
    text = str(exc.value)
    for needle in ("T4: memory_bandwidth", "A10G: missing required field 'fp32_flops'", "L4: supports fp8",
                   "unknown field 'colour'", "compute_fraction must be in (0, 1]", "already used",
                   "MIG needs compute capability"):
        assert needle in text, needle
    assert str(path) in text


def test_unreadable_catalogs(tmp_path):
    with pytest.raises(ConfigError, match="GPU catalog file not found: .*missing.yaml"):
        load_catalog(str(tmp_path / "missing.yaml"))
    p = tmp_path / "x.yaml"
    p.write_text("gpus: 3\n")
    with pytest.raises(ConfigError, match="'gpus' list"):
        load_catalog(str(p))
    with pytest.raises(ConfigError, match="extra GPU entry"):
        load_catalog(extra=[{"price_per_hour": 1}])


def test_local_cpu_micro_benchmark_makes_a_device_entry():
    from rightsizer.sizing.cpu import LOCAL, measure_local_cpu

    entry = measure_local_cpu()
    cat = load_catalog(extra=[{**entry, "price_per_hour": 0.1, "price_source": "user"}])
    dev = cat.get(LOCAL)
    assert dev.is_cpu and dev.priced and dev.memory_bandwidth > 1e8 and dev.fp32_flops > 1e8
    est = estimate(str(CONFIG), dev, Workload(32, 8, 1), catalog=cat)
    assert math.isfinite(est.tpot_ms) and est.tpot_ms > 0 and est.fits
