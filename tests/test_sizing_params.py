"""Exact parameter counts from public configs, cross-checked with transformers on the meta device."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError
from rightsizer.sizing import SUPPORTED_ARCHITECTURES, count_params, model_spec

CONFIGS = Path(__file__).parent / "fixtures" / "configs"

# (fixture, total, active). Totals are the published sizes (sizing facts table, model cards)
# and equal sum(p.numel()) of transformers' own model: see test_matches_transformers_meta_model.
EXPECTED = [
    ("llama-3.1-8b", 8_030_261_248, 8_030_261_248),
    ("llama-2-7b", 6_738_415_616, 6_738_415_616),
    ("llama-2-70b", 68_976_648_192, 68_976_648_192),
    ("mistral-7b-v0.1", 7_241_732_096, 7_241_732_096),
    ("qwen2.5-0.5b", 494_032_768, 494_032_768),
    ("qwen2.5-7b", 7_615_616_512, 7_615_616_512),
    ("smollm2-135m", 134_515_008, 134_515_008),
    ("gemma-2b", 2_506_172_416, 2_506_172_416),
    ("gemma-2-2b", 2_614_341_888, 2_614_341_888),
    ("phi-3-mini-4k", 3_821_079_552, 3_821_079_552),
    ("gpt2", 124_439_808, 124_439_808),
    ("pythia-160m", 162_322_944, 162_322_944),
    ("mixtral-8x7b", 46_702_792_704, 12_879_925_248),
    ("qwen3-0.6b", 596_049_920, 596_049_920),
]


def _cfg(name: str) -> dict:
    return json.loads((CONFIGS / f"{name}.json").read_text())


def test_every_fixture_is_covered():
    # Guard against a test that silently checks fewer files than exist.
    assert sorted(p.stem for p in CONFIGS.glob("*.json")) == sorted(n for n, _, _ in EXPECTED)
    assert len(EXPECTED) >= 8


@pytest.mark.parametrize("name,total,active", EXPECTED)
def test_exact_counts(name, total, active):
    pc = count_params(_cfg(name))
    assert (pc.total, pc.active) == (total, active)
    assert pc.embedding + pc.lm_head + pc.linear + pc.other == pc.total


def test_path_directory_and_file_inputs(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "config.json").write_text((CONFIGS / "qwen2.5-0.5b.json").read_text())
    assert count_params(str(d)).total == 494_032_768
    assert count_params(d / "config.json").total == 494_032_768


def test_matches_transformers_meta_model():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    for name, total, _ in EXPECTED:
        raw = _cfg(name)
        cfg = transformers.AutoConfig.for_model(**{k: v for k, v in raw.items() if not k.startswith("_")})
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(cfg)
        n = sum(p.numel() for p in model.parameters())
        assert n == total == count_params(cfg).total, name  # also accepts a PretrainedConfig


def test_qwen2_has_qkv_bias_and_gemma_ties_embeddings():
    q = model_spec(_cfg("qwen2.5-7b"))
    assert q.qkv_bias and not q.o_bias
    g = model_spec(_cfg("gemma-2b"))
    assert g.tied and g.head_dim == 256 and g.kv_heads == 1
    g2 = model_spec(_cfg("gemma-2-2b"))
    assert g2.norms_per_layer == 4 and g2.sliding_window == 4096 and g2.sliding_layers == 13
    m = model_spec(_cfg("mistral-7b-v0.1"))
    assert m.sliding_window == 4096 and m.sliding_layers == 32
    assert model_spec(_cfg("qwen2.5-7b")).sliding_window is None  # use_sliding_window: false


def test_multimodal_text_config_is_used():
    wrapped = {"model_type": "llava", "text_config": _cfg("llama-2-7b"), "vision_config": {}}
    assert count_params(wrapped).total == 6_738_415_616


def test_unknown_architecture_lists_supported():
    # neither a family here nor a model type transformers knows
    with pytest.raises(ConfigError) as exc:
        count_params({"model_type": "not-a-model", "hidden_size": 10})
    msg = str(exc.value)
    assert "not-a-model" in msg and "unknown architecture" in msg
    for arch in SUPPORTED_ARCHITECTURES:
        assert arch in msg


def test_a_model_type_no_family_covers_is_counted_on_the_meta_device():
    """starcoder2 (transformers knows it; no family here): exact totals from the meta device,
    marked generic; a family's model type is counted by its rules, the same totals."""
    import torch
    from transformers import AutoModelForCausalLM, Starcoder2Config

    cfg = Starcoder2Config(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2).to_dict()
    spec = model_spec(cfg)
    assert spec.generic and spec.model_type == "starcoder2" and spec.layers == 2 and spec.kv_heads == 2
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(Starcoder2Config(**cfg))
    counted = count_params(cfg)
    assert counted.total == sum(p.numel() for p in model.parameters())
    # q, o 64x64; k, v 64x32 (2 kv heads); the MLP 64x128 and 128x64: per layer, 2 layers
    assert counted.linear == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 2 * 64 * 128)
    assert counted.embedding == 500 * 64 and counted.lm_head == 0  # tied by default
    assert counted.total == counted.embedding + counted.lm_head + counted.linear + counted.other
    assert not model_spec(_cfg("llama-3.1-8b")).generic
    # the decision record says which rules sized each side
    from rightsizer.size_gpu import sizing_rules

    assert sizing_rules(cfg) == "generic" and sizing_rules(_cfg("llama-3.1-8b")) == "llama"
    assert sizing_rules(None) is None


def test_missing_fields_are_all_reported():
    cfg = _cfg("llama-3.1-8b")
    del cfg["hidden_size"], cfg["vocab_size"]
    with pytest.raises(ConfigError) as exc:
        count_params(cfg)
    assert len(exc.value.problems) == 2
    assert "hidden_size" in str(exc.value) and "vocab_size" in str(exc.value)


def test_bad_values_and_inconsistent_heads():
    cfg = _cfg("llama-3.1-8b")
    cfg["num_hidden_layers"] = 0
    with pytest.raises(ConfigError, match="layers must be a positive integer"):
        count_params(cfg)
    cfg = _cfg("llama-3.1-8b")
    cfg["num_key_value_heads"] = 5
    with pytest.raises(ConfigError, match="not a multiple"):
        count_params(cfg)


def test_bad_sources(tmp_path):
    with pytest.raises(ConfigError, match="neither an existing file"):
        count_params(str(tmp_path / "nope.json"))
    with pytest.raises(ConfigError, match="no config.json"):
        count_params(str(tmp_path))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot read"):
        count_params(str(bad))
    with pytest.raises(ConfigError, match="must be a dict"):
        count_params(42)
