"""The GPU catalog: every entry validated and plausible; errors list every problem."""

from __future__ import annotations

import copy

import pytest
import yaml

from rightsizer.errors import ConfigError
from rightsizer.sizing import load_catalog
from rightsizer.sizing.catalog import DEFAULT_CATALOG_PATH

EXPECTED = ["T4", "A10G", "L4", "L40S", "A100-40GB", "A100-80GB", "H100-SXM", "H100-PCIe", "H200", "MI300X"]

# Public datasheet figures (dense): (memory GB marketing, bandwidth GB/s, bf16-or-fp16 TFLOP/s)
DATASHEET = {
    "T4": (16, 320, 65), "A10G": (24, 600, 70), "L4": (24, 300, 121), "L40S": (48, 864, 362),
    "A100-40GB": (40, 1555, 312), "A100-80GB": (80, 2039, 312), "H100-SXM": (80, 3350, 989),
    "H100-PCIe": (80, 2000, 756), "H200": (141, 4800, 989), "MI300X": (192, 5300, 1307),
}


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
    assert 0.2 < gpu.price_per_hour < 20 and gpu.price_source.startswith("http")
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
    assert load_catalog().with_prices({"T4": 0.35}).get("T4").price_per_hour == 0.35


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
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalog(str(tmp_path / "missing.yaml"))
    p = tmp_path / "x.yaml"
    p.write_text("gpus: 3\n")
    with pytest.raises(ConfigError, match="'gpus' list"):
        load_catalog(str(p))
    with pytest.raises(ConfigError, match="extra GPU entry"):
        load_catalog(extra=[{"price_per_hour": 1}])
