"""Tiny random models of eight real architectures (tests/zoo.py) through each part of the
project: sizing from the config, load, score, generate, LoRA, int8 and int4.

The models are random, so the tests pin what the code guarantees (counts, shapes, which
layers are kept and why, that training moves the adapter), not scores.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from tests.zoo import ZOO, build

ROOT = Path(__file__).resolve().parents[1]
ARCHS = sorted(ZOO)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("zoo")
    return {name: build(name, base / name) for name in ARCHS}


@pytest.fixture(scope="module")
def routing():
    from rightsizer.taskspec import load_task

    return load_task(ROOT / "tasks" / "ticket_routing.yaml")


def test_the_zoo_covers_the_families_and_tokenizer_kinds():
    from rightsizer.families import family_of

    assert len(ZOO) >= 8 and {"gpt2", "gemma3_text", "phi3"} <= set(ZOO)
    assert any(ZOO[a].config_class in ("Qwen3MoeConfig", "MixtralConfig") for a in ZOO)
    assert {e.tokenizer for e in ZOO.values()} == {"chatml", "gemma", "gpt2"}
    assert all(family_of(a) is not None for a in ZOO), [a for a in ZOO if family_of(a) is None]


@pytest.mark.parametrize("arch", ARCHS)
def test_sized_from_its_config_with_exact_counts(zoo, arch):
    from transformers import AutoModelForCausalLM

    from rightsizer.sizing import SLO, Workload, count_params, model_spec, recommend

    model = AutoModelForCausalLM.from_pretrained(zoo[arch])
    counted = count_params(str(zoo[arch]))
    assert counted.total == sum(p.numel() for p in model.parameters())
    spec = model_spec(str(zoo[arch]))
    assert spec.model_type == arch and not spec.generic  # its family's rules, not the fallback
    if spec.is_moe:
        assert counted.active < counted.total
    rec = recommend(str(zoo[arch]), Workload(prompt_tokens=64, output_tokens=4, batch=4),
                    SLO(ttft_ms=1000, tpot_ms=100), precisions=["bf16", "int4"])
    assert rec.chosen is not None


@pytest.mark.parametrize("arch", ARCHS)
def test_loads_scores_and_generates(zoo, routing, arch):
    from rightsizer.evaluate import evaluate_quality, load_rows
    from rightsizer.inference import generate, load_model
    from rightsizer.runtime.target import resolve_target

    target = resolve_target()  # CUDA in bf16 where the machine has a GPU (scripts/gpu_checks.sh)
    model, tok = load_model(str(zoo[arch]), target=target)
    assert model.device.type == target.device.split(":")[0] and model.dtype == target.torch_dtype
    assert tok.pad_token is not None and not model.training  # gpt2: pad set from EOS
    spec = dataclasses.replace(routing, candidates=[str(zoo[arch])], max_eval_examples=8)
    quality = evaluate_quality(model, tok, spec, load_rows(spec, "eval", 8))
    assert quality.n == 8 and 0.0 <= quality.score <= 1.0
    out = generate(model, tok, ["Ticket: my card was charged twice\nQueue:"] * 2, max_new_tokens=4)
    assert len(out) == 2 and out[0] == out[1] and all(isinstance(o, str) for o in out)


@pytest.mark.parametrize("arch", ARCHS)
def test_lora_trains_the_default_targets(zoo, routing, arch, tmp_path):
    from safetensors.torch import load_file

    from rightsizer.evaluate import load_rows
    from rightsizer.finetune.lora import ALL_LINEAR, default_targets
    from rightsizer.finetune.task import train_for_task
    from rightsizer.inference import load_model

    settings = dataclasses.replace(routing.ladder.lora, steps=3, global_batch=4)
    result = train_for_task(routing, str(zoo[arch]), settings, load_rows(routing, "train")[:12], tmp_path,
                            progress=False)
    model, _ = load_model(str(zoo[arch]))
    targets = default_targets(arch, model)
    assert targets == ALL_LINEAR or targets, targets
    adapter = Path(result["adapter_dir"])
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    assert cfg["target_modules"]
    weights = load_file(adapter / "adapter_model.safetensors")
    b = [w for k, w in weights.items() if "lora_B" in k]
    assert b and any(w.abs().sum() > 0 for w in b)  # B starts at zero: training moved it
    if arch == "gpt2":  # Conv1D projections are adapted (PEFT handles their layout)
        assert any("c_attn" in k for k in weights)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("precision", ["int8", "int4"])
def test_quantizes_and_keeps_what_the_kernel_refuses_one_step_up(zoo, arch, precision):
    from rightsizer.inference import load_model
    from rightsizer.runtime.backends import apply_quant_config, quantize_model
    from rightsizer.runtime.target import resolve_target

    target = resolve_target()
    model, tok = load_model(str(zoo[arch]), target=target)
    x = tok(["Ticket: my card was charged twice"], return_tensors="pt").to(target.device)
    info = quantize_model(model, precision, device=target.device, dtype=target.compute_dtype)
    logits = model(**x).logits
    assert torch.isfinite(logits).all() and info.quantized_linears > 0
    refused = {f["module"]: f for f in info.fallback}
    if precision == "int4" and arch == "phi3":  # gate_up 700 wide, down_proj 350 deep
        assert {m.rsplit(".", 1)[-1] for m in refused} == {"gate_up_proj", "down_proj"}
        assert all(f["precision"] == "int8" for f in refused.values())
        tile = 8 if target.is_cuda else 16  # the int4 kernel's tile: CUDA's or the CPU's
        assert f"out_features 700 is not a multiple of {tile}" in refused["model.layers.0.mlp.gate_up_proj"]["reason"]
    elif precision == "int4" and arch == "mistral":  # an untied head over 405 tokens
        assert list(refused) == ["lm_head"] and "out_features 405" in refused["lm_head"]["reason"]
    else:
        assert refused == {}
    again, _ = load_model(str(zoo[arch]), target=target)
    apply_quant_config(again, info.to_config())  # serving re-applies the config: the same layers
    assert again.rightsizer_quant.fallback == info.fallback
    assert torch.equal(again(**x).logits, logits)
