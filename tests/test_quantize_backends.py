"""CPU backends of rightsizer.quantize: real int8/int4 quantization, memory, configs, errors."""

import importlib.util
import json

import pytest
import torch

from rightsizer.errors import ConfigError
from rightsizer.precisions import SEARCH_ORDER
from rightsizer.runtime import apply_quant_config, available_backends, quantize_model, sensitive_modules, weight_bytes
from rightsizer.runtime.int4pack import Int4PackedLinear, quantize_groupwise
from tests.tiny_models import tiny_llama

IDS = torch.randint(3, 256, (4, 16), generator=torch.Generator().manual_seed(0))


def logits(model):
    with torch.no_grad():
        return model(IDS).logits.float()


def rel_err(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def reference():
    return logits(tiny_llama().to(torch.bfloat16))


def test_cpu_backends_chosen_and_unavailable_ones_explained():
    av = available_backends("cpu")
    assert set(av) == set(SEARCH_ORDER)
    assert av["bf16"]["backend"] == "native"
    assert av["int8"]["backend"] == "torchao-int8wo"
    assert av["int4"]["backend"] == "torch-int4pack"
    assert av["fp8"]["backend"] is None and "CUDA" in av["fp8"]["reason"]
    int4 = {c["backend"]: c for c in av["int4"]["candidates"]}
    assert not int4["bnb-nf4"]["usable"] and "CUDA" in int4["bnb-nf4"]["reason"]
    assert not int4["gptq"]["usable"] and int4["gptq"]["reason"]
    json.dumps(av)  # a table artifact: must be JSON-able


def test_int8_is_real_and_close(reference):
    model = tiny_llama()
    info = quantize_model(model, "int8")
    w = model.model.layers[1].mlp.up_proj.weight
    assert type(w).__name__ == "Int8Tensor"  # torchao tensor subclass, not a plain tensor
    assert info.backend == "torchao-int8wo" and info.quantized_linears == 4 * 7
    assert info.kept_linears == ["lm_head"]  # tied to the embeddings: left alone
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert rel_err(logits(model), reference) < 0.05
    out = model.generate(IDS[:1, :6], max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 11)


def test_int4_is_real_packed_and_generates(reference):
    model = tiny_llama()
    info = quantize_model(model, "int4")
    up = model.model.layers[1].mlp.up_proj
    assert isinstance(up, Int4PackedLinear)
    assert up.packed_weight.dtype == torch.uint8 and up.packed_weight.shape == (384, 64)  # 2 values a byte
    assert info.group_size == 64 and info.quantized_linears == 28
    err = rel_err(logits(model), reference)
    assert 0.01 < err < 0.5  # really quantized (not a copy), still the same model
    out = model.generate(IDS[:1, :6], max_new_tokens=5, do_sample=False, pad_token_id=0)
    assert out.shape == (1, 11)


def test_int4_kernel_matches_groupwise_dequantization():
    lin = torch.nn.Linear(128, 96, bias=True).to(torch.bfloat16)
    q, scale, zero = quantize_groupwise(lin.weight, 32)
    deq = ((q.view(96, 4, 32) - 8) * scale[..., None] + zero[..., None]).view(96, 128)
    packed = Int4PackedLinear.from_linear(lin, 32)
    torch.testing.assert_close(packed.dequantize().float(), deq.to(torch.bfloat16).float(), atol=0.02, rtol=0.02)
    x = torch.randn(3, 5, 128, dtype=torch.bfloat16)
    ref = x.float() @ deq.t() + lin.bias.float()
    torch.testing.assert_close(packed(x).float(), ref, atol=0.1, rtol=0.03)
    assert (deq - lin.weight.float()).abs().max() <= scale.max() / 2 + 1e-3  # round to nearest
    # a strided view (the last position of each sequence, as generation slices it) answers alike
    last = x[:, -1:, :]
    assert not last.reshape(-1, 128).is_contiguous()
    torch.testing.assert_close(packed(last), packed(last.contiguous()))


def test_memory_ratios_on_a_linear_dominated_model():
    def make():
        return tiny_llama(hidden=256, intermediate=1024, layers=4)  # linear layers: 97% of weights

    bf16 = weight_bytes(make().to(torch.bfloat16))
    m8, m4 = make(), make()
    r8 = quantize_model(m8, "int8").memory_bytes / bf16
    r4 = quantize_model(m4, "int4").memory_bytes / bf16
    assert r8 <= 0.55, r8
    assert r4 <= 0.30, r4
    assert r4 < r8 < 1


def test_weight_bytes_counts_tied_once_and_quantized_truly():
    model = tiny_llama().to(torch.bfloat16)
    n = sum(p.numel() for p in model.parameters())  # parameters() yields tied weights once
    assert abs(weight_bytes(model) - 2 * n) / (2 * n) < 0.02
    q = tiny_llama()
    quantize_model(q, "int8")
    assert q.get_memory_footprint() > weight_bytes(q)  # the footprint API over-reports torchao


def test_skip_modules_stay_high_precision():
    model = tiny_llama()
    skip = sensitive_modules(model)
    assert skip == ["lm_head", "model.embed_tokens", "model.layers.0", "model.layers.3"]
    info = quantize_model(model, "int4", skip_modules=skip)
    assert type(model.model.layers[0].mlp.up_proj) is torch.nn.Linear
    assert type(model.model.layers[3].self_attn.q_proj) is torch.nn.Linear
    assert isinstance(model.model.layers[1].mlp.up_proj, Int4PackedLinear)
    assert info.quantized_linears == 14 and info.mixed


def test_config_round_trip_rebuilds_the_same_model():
    model = tiny_llama()
    info = quantize_model(model, "int4", skip_modules=["model.layers.0"])
    config = json.loads(json.dumps(info.to_config()))
    fresh = apply_quant_config(tiny_llama(), config)
    torch.testing.assert_close(logits(fresh), logits(model), atol=0, rtol=0)
    assert isinstance(fresh.model.layers[2].mlp.down_proj, Int4PackedLinear)
    assert type(fresh.model.layers[0].mlp.down_proj) is torch.nn.Linear


@pytest.mark.parametrize("kwargs, words", [
    (dict(precision="int3"), ["precision", "int3"]),
    (dict(precision="fp8"), ["fp8", "CUDA"]),
    (dict(precision="int4", backend="bnb-nf4"), ["bnb-nf4", "CUDA"]),
    (dict(precision="int4", backend="torchao-int8wo"), ["backend", "int8"]),
    (dict(precision="int8", backend="nope"), ["backend", "nope"]),
    (dict(precision="int8", device="tpu"), ["device", "tpu"]),
    (dict(precision="int4", backend="gptq"), ["gptq"]),
    (dict(precision="int4", skip_modules=["model"]), ["skip_modules"]),
])
def test_bad_input_is_a_clear_config_error(kwargs, words):
    model = tiny_llama(layers=2)
    with pytest.raises(ConfigError) as e:
        quantize_model(model, **kwargs)
    for w in words:
        assert w in str(e.value)


@pytest.mark.parametrize("kwargs", [dict(precision="fp8"), dict(precision="int4", skip_modules=["model", "lm_head"]),
                                    dict(precision="int8", dtype="int3"), dict(precision="int4", group_size=7)])
def test_bad_input_leaves_the_model_untouched(kwargs):
    model = tiny_llama(layers=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError):
        quantize_model(model, **kwargs)
    after = model.state_dict()
    assert all(after[k].dtype == torch.float32 and torch.equal(after[k], v) for k, v in before.items())


def test_bad_quant_config():
    with pytest.raises(ConfigError, match="missing 'backend'"):
        apply_quant_config(tiny_llama(layers=2), {"precision": "int8"})
    with pytest.raises(ConfigError, match="version"):
        apply_quant_config(tiny_llama(layers=2), {"precision": "int8", "backend": "torchao-int8wo", "version": 9})


def test_apply_config_follows_the_model_device_and_substitutes_unrunnable_backends():
    model = tiny_llama(layers=2)
    # a config measured on a GPU (torchao tinygemm int4), served on this CPU
    gpu_config = {"version": 1, "precision": "int4", "backend": "torchao-int4wo", "skip_modules": [],
                  "dtype": "bfloat16", "group_size": 128}
    with pytest.warns(UserWarning, match="torch-int4pack"):
        apply_quant_config(model, gpu_config)
    assert model.rightsizer_quant.backend == "torch-int4pack"
    assert model.rightsizer_quant.substituted_from == "torchao-int4wo"
    assert isinstance(model.model.layers[0].mlp.up_proj, Int4PackedLinear)
    with pytest.raises(ConfigError, match="CUDA"):
        apply_quant_config(tiny_llama(layers=2), gpu_config, substitute=False)
    with pytest.raises(ConfigError, match="fp8"):  # no fp8 backend runs on CPU at all
        apply_quant_config(tiny_llama(layers=2), {"precision": "fp8", "backend": "torchao-fp8wo"})
    with pytest.raises(ConfigError, match="pre-quantized"):
        apply_quant_config(tiny_llama(layers=2), {"precision": "int4", "backend": "gptq", "pre_quantized": True})


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None,
                    reason="bitsandbytes is not installed here (the chooser uses it on CUDA only)")
@pytest.mark.parametrize("four_bit, max_ratio", [(False, 0.55), (True, 0.30)])
def test_bnb_layer_replacement_is_real(four_bit, max_ratio):
    """The bnb backends' layer swap, run on CPU (bitsandbytes >= 0.46 has a CPU backend)."""
    from rightsizer.runtime import backends

    make = lambda: tiny_llama(hidden=256, intermediate=1024).to(torch.bfloat16)  # noqa: E731
    ref = make()
    model = make()
    backends._apply_bnb(model, lambda name, m: name == "lm_head", {"device": "cpu"}, four_bit)
    assert type(model.model.layers[0].mlp.up_proj).__name__ == ("Linear4bit" if four_bit else "Linear8bitLt")
    assert backends._quantized_linear_count(model)[0] == 28
    assert weight_bytes(model) / weight_bytes(ref) <= max_ratio
    assert 0 < rel_err(logits(model), logits(ref)) < 0.5
