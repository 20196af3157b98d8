"""The precision table: consistent with the backends, the sizing numbers, the catalog, the
task spec, and the one quant_config writer that every writer calls."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rightsizer.errors import ConfigError
from rightsizer.precisions import (
    FEATURE_MIN_CC, KV_PRECISIONS, PRECISION_TABLE, QUANT_CONFIG_KEYS, QUANT_CONFIG_VERSION, SEARCH_ORDER,
    check_search_precision, get_precision, kv_bytes_per_element, quant_config,
)
from rightsizer.quantize import PrecisionTrial, search_precision
from rightsizer.runtime import BACKENDS, apply_quant_config, quantize_model
from rightsizer.sizing import default_catalog, weights_bytes
from rightsizer.sizing.catalog import FEATURES


class Blocks(nn.Module):
    """Three linear blocks, 128 wide (the CPU int4 kernel takes groups of 64): enough for a
    quantization round trip without transformers."""

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.layers = nn.ModuleList(nn.Linear(128, 128) for _ in range(3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


X = torch.randn(4, 128, generator=torch.Generator().manual_seed(1))


# --------------------------------------------------------------------------- the table


def test_search_order_is_high_to_low_and_the_only_precisions_with_backends():
    assert SEARCH_ORDER == ("bf16", "fp8", "int8", "int4")
    bits = [PRECISION_TABLE[p].bits for p in SEARCH_ORDER]
    assert bits == sorted(bits, reverse=True)
    assert {n for n, p in PRECISION_TABLE.items() if p.backends} == set(SEARCH_ORDER)


def test_every_backend_of_a_precision_exists_and_implements_it():
    for name in SEARCH_ORDER:
        backends = PRECISION_TABLE[name].backends
        assert backends, name
        for b in backends:
            assert b in BACKENDS, (name, b)
            assert BACKENDS[b].precision == name, (name, b)
    listed = [b for p in SEARCH_ORDER for b in PRECISION_TABLE[p].backends]
    assert sorted(listed) == sorted(BACKENDS)  # every backend is reachable, once


def test_bytes_per_weight_are_the_sizing_engines():
    # the numbers docs/sizing.md derives (and the sizing accuracy tests rest on)
    expected = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": (8 + 16 / 4096) / 8,
                "int4": (4 + 20 / 128) / 8, "nf4": (4 + 8 / 64 + 32 / 16384) / 8}
    assert {n: p.bytes_per_weight for n, p in PRECISION_TABLE.items()} == pytest.approx(expected, rel=0, abs=0)
    assert get_precision("int4").bits_per_weight == 4.15625
    assert get_precision("int4-g32").bytes_per_weight == (4 + 20 / 32) / 8
    assert weights_bytes(1_000_000, "int4") == round(1_000_000 * 4.15625 / 8)
    assert [p.dense_bytes for p in PRECISION_TABLE.values()] == [4, 2, 2, 2, 2, 2, 2]


def test_kv_precisions_and_their_bytes():
    assert KV_PRECISIONS == ("fp32", "bf16", "fp16", "fp8", "int8")
    assert [kv_bytes_per_element(k) for k in KV_PRECISIONS] == [4, 2, 2, 1, 1]
    assert kv_bytes_per_element("float16") == 2 and kv_bytes_per_element("fp8-e4m3") == 1
    with pytest.raises(ConfigError, match="unknown KV-cache precision 'int4'.*fp8"):
        kv_bytes_per_element("int4")


def test_compute_capability_and_catalog_features():
    assert get_precision("bf16").min_compute_capability == 8.0
    assert get_precision("fp8").min_compute_capability == 8.9
    assert get_precision("fp32").min_compute_capability is None
    for p in PRECISION_TABLE.values():
        assert p.feature is None or p.feature in FEATURES
    assert set(FEATURE_MIN_CC) == set(FEATURES) - {"mig"}
    # the catalog derives its feature flags from these thresholds
    for gpu in default_catalog():
        if gpu.vendor != "nvidia":
            continue
        cc = float(gpu.compute_capability)
        for feature, need in FEATURE_MIN_CC.items():
            assert gpu.supports(feature) == (cc >= need), (gpu.name, feature)


def test_backend_thresholds_come_from_the_table():
    from rightsizer.runtime.backends import _min_cc

    assert _min_cc("fp8") == (8, 9) and _min_cc("bf16") == (8, 0)


def test_aliases_and_group_sizes():
    assert get_precision(" GPTQ ").name == "int4" and get_precision("bfloat16").name == "bf16"
    assert get_precision("int4-g128") is PRECISION_TABLE["int4"]
    g32 = get_precision("int4-g32")
    assert (g32.name, g32.group_size, g32.backends) == ("int4-g32", 32, ())


def test_sizing_name():
    assert get_precision("fp32").sizing_name == "bf16"  # a CPU-side fp32 choice is served in bf16
    for name in ("bf16", "fp16", "fp8", "int8", "int4", "nf4", "int4-g64"):
        assert get_precision(name).sizing_name == name


def test_unknown_names_are_named():
    with pytest.raises(ConfigError, match=r"unknown precision 'fp7'; known: fp32, bf16.*int4-gN"):
        get_precision("fp7")
    with pytest.raises(ConfigError, match=r"precisions: 'nf4' is not a known precision; "
                                          r"expected one of \['bf16', 'fp8', 'int8', 'int4'\]"):
        check_search_precision("nf4", "precisions")
    with pytest.raises(ConfigError, match="'int4-g32'"):  # sized, never made by the search
        check_search_precision("int4-g32")


# --------------------------------------------------------------------------- quant_config


def test_the_writer():
    c = quant_config("int4", "torch-int4pack", skip_modules=("layers.0",), skip_precision="int8", group_size=64)
    assert c == {"version": QUANT_CONFIG_VERSION, "precision": "int4", "backend": "torch-int4pack",
                 "skip_modules": ["layers.0"], "skip_precision": "int8", "dtype": "bfloat16", "group_size": 64}
    pre = quant_config("int4", "gptq", group_size=128, pre_quantized=True, calibration_samples=32)
    assert pre["pre_quantized"] is True and pre["calibration_samples"] == 32
    assert set(QUANT_CONFIG_KEYS) == set(pre) - {"calibration_samples"}
    with pytest.raises(ConfigError, match="quant_config.precision: 'fp7'"):
        quant_config("fp7", "native")
    with pytest.raises(ValueError, match="version"):
        quant_config("int8", "torchao-int8wo", version=2)


def test_every_writer_writes_through_it():
    model = Blocks()
    info = quantize_model(model, "int8", device="cpu")
    assert info.to_config() == quant_config("int8", "torchao-int8wo", dtype="bfloat16")
    trial = PrecisionTrial(precision="int4", backend="gptq", group_size=128,
                           pre_quantized={"version": 1, "precision": "int4", "backend": "gptq", "group_size": 128,
                                          "pre_quantized": True, "desc_act": False, "calibration_samples": 16})
    assert trial.to_config() == quant_config("int4", "gptq", group_size=128, pre_quantized=True,
                                             desc_act=False, calibration_samples=16)


@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_the_written_config_round_trips_through_apply_quant_config(precision):
    model = Blocks()
    info = quantize_model(model, precision, skip_modules=["layers.2"], device="cpu")
    assert info.quantized_linears == 2 and info.kept_linears == ["layers.2"]
    with torch.no_grad():
        expected = model(X.to(torch.bfloat16))
    rebuilt = apply_quant_config(Blocks(), info.to_config())
    assert rebuilt.rightsizer_quant.to_config() == info.to_config()
    with torch.no_grad():
        assert torch.equal(rebuilt(X.to(torch.bfloat16)), expected)


def test_apply_quant_config_reads_only_its_version():
    config = quant_config("int8", "torchao-int8wo")
    with pytest.raises(ConfigError, match=f"version: {QUANT_CONFIG_VERSION + 1}; this library reads version"):
        apply_quant_config(Blocks(), {**config, "version": QUANT_CONFIG_VERSION + 1})


def test_search_refuses_a_pre_quantized_config_of_another_version():
    from rightsizer.quantize import PreQuantized

    item = PreQuantized(load=Blocks, config={"version": QUANT_CONFIG_VERSION + 1, "group_size": 128})
    with pytest.raises(ConfigError, match="'gptq' has quant_config version"):
        search_precision(Blocks, lambda m: 1.0, baseline_score=1.0, tolerance=0.1, precisions=["int4"],
                         progress=False, pre_quantized={"gptq": item})


# --------------------------------------------------------------------------- task spec and search


def _spec(precisions):
    import yaml
    from pathlib import Path

    from rightsizer.taskspec import task_from_dict

    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "tasks" / "review_sentiment.yaml").read_text())
    raw["precisions"] = precisions
    return task_from_dict(raw)


def test_task_spec_accepts_fp8_and_names_an_unknown_precision():
    assert _spec(["fp8", "int4"]).precisions == ["fp8", "int4"]
    with pytest.raises(ConfigError, match=r"precisions: 'fp7'; expected some of \['bf16', 'fp8', 'int8', 'int4'\]"):
        _spec(["int8", "fp7"])


def test_fp8_without_fp8_hardware_is_a_skipped_trial_with_the_reason():
    s = search_precision(Blocks, lambda m: 1.0, baseline_score=1.0, tolerance=0.1, precisions=["fp8"],
                         device="cpu", progress=False)
    fp8 = [t for t in s.trials if t.precision == "fp8"]
    assert [(t.backend, t.status) for t in fp8] == [("torchao-fp8wo", "skipped")]
    # torchao checked first: without it the reason says so, with it the missing GPU
    assert fp8[0].reason in ("torchao is not installed", "needs a CUDA GPU; this device is CPU")
    assert s.kept.precision == "bf16"


def test_prequantize_writes_its_config_through_the_writer(monkeypatch, tmp_path):
    """gptqmodel is not in this environment: a stub stands in for it, so that what
    ``prequantize`` writes (and returns) is checked here; the real run is in tests/test_gptq.py."""
    import importlib.machinery
    import json
    import sys
    import types

    from rightsizer import quantize_gptq as prequant

    class Model:
        def quantize(self, texts, batch_size):
            pass

        def save(self, path):
            (tmp_path / "saved").write_text(path)

    stub = types.ModuleType("gptqmodel")
    stub.__spec__ = importlib.machinery.ModuleSpec("gptqmodel", None)
    stub.GPTQModel = types.SimpleNamespace(load=lambda path, qc, device: Model())
    stub.QuantizeConfig = lambda **kw: kw
    monkeypatch.setitem(sys.modules, "gptqmodel", stub)
    out = tmp_path / "q"
    config = prequant.prequantize("some/hub-id", ["a text"] * 16, out, "gptq", 4, 128, "cpu")
    assert config == quant_config("int4", "gptq", group_size=128, pre_quantized=True,
                                  calibration_samples=16, device="cpu", desc_act=False)
    assert json.loads((out / "rightsizer_quant.json").read_text()) == config
