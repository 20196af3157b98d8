"""Device map and offload plan, on CPU with an artificially small memory budget."""

import pytest
import torch

from rightsizer.errors import ConfigError, InsufficientMemory
from rightsizer.inference import load_model
from rightsizer.runtime.placement import plan_placement
from tests.tiny_models import tiny_llama

IDS = torch.randint(3, 256, (1, 10), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny")
    model = tiny_llama(layers=4).to(torch.bfloat16)
    model.save_pretrained(path)
    return path, model


def greedy(model):
    return model.generate(IDS, max_new_tokens=8, do_sample=False, pad_token_id=0)


def test_small_cpu_budget_offloads_to_disk_and_generation_matches(saved, tmp_path):
    from transformers import AutoModelForCausalLM

    path, reference = saved
    plan = plan_placement(reference.config, cpu_bytes=900_000, offload_folder=tmp_path / "offload")
    assert plan.offloaded and plan.on_disk
    assert plan.bytes_per_device["cpu"] <= 900_000 and plan.bytes_per_device["disk"] > 0
    assert plan.device_map["lm_head"] == plan.device_map["model.embed_tokens"]  # tied: same place
    placed = AutoModelForCausalLM.from_pretrained(path, **plan.from_pretrained_kwargs())
    assert set(map(str, placed.hf_device_map.values())) == {"cpu", "disk"}
    # disk-mapped blocks are not in memory: hooks stream them from the safetensors file per forward
    assert placed.model.layers[3].mlp.up_proj.weight.device.type == "meta"
    assert placed.model.layers[0].mlp.up_proj.weight.device.type == "cpu"
    # the offloaded model generates what the reference would: each token it picks is the
    # reference's top token up to bf16 rounding (an exact match would hang on near-ties, which
    # differ between CPUs' kernels)
    out = greedy(placed)
    with torch.no_grad():
        ref = reference(out).logits[0, IDS.shape[1] - 1:-1].float()
    picked = ref.gather(-1, out[0, IDS.shape[1]:, None]).squeeze(-1)
    assert out.shape[1] == IDS.shape[1] + 8 and float((ref.max(-1).values - picked).max()) <= 2e-2
    with torch.no_grad():
        torch.testing.assert_close(placed(IDS).logits, reference(IDS).logits, atol=2e-2, rtol=2e-2)


def test_roomy_budget_keeps_everything_in_one_place(saved):
    plan = plan_placement(saved[1].config, cpu_bytes=10_000_000)
    assert not plan.offloaded and set(plan.device_map.values()) == {"cpu"} and plan.offload_folder is None


def test_gpu_plan_reserves_kv_and_spills_to_cpu(saved):
    config = saved[1].config
    total = plan_placement(config).weight_bytes
    # planning only (no GPU here): 3/4 of the weights' size left after the KV/activation reserve
    plan = plan_placement(config, gpu_bytes=3 * total // 4 + 100_000, reserve_bytes=100_000, cpu_bytes=total)
    assert plan.max_memory[0] == 3 * total // 4
    assert 0 < plan.bytes_per_device["0"] <= 3 * total // 4 and plan.bytes_per_device["cpu"] > 0
    assert plan.device_map["model.layers.0"] == 0 and plan.device_map["model.layers.3"] == "cpu"
    assert plan.offloaded and not plan.on_disk
    blocks = [k for k in plan.device_map if k.startswith("model.layers.")]
    assert blocks and all(k.count(".") == 2 for k in blocks)  # a block is never split
    roomy = plan_placement(config, gpu_bytes=total * 2, reserve_bytes=1000)
    assert set(roomy.device_map.values()) == {0} and not roomy.offloaded


def test_demo_candidate_loads_placed_and_matches(tmp_path):

    model, tok = load_model("demo:tiny-m", dtype=torch.bfloat16)
    plan = plan_placement("demo:tiny-m", cpu_bytes=plan_placement("demo:tiny-m").weight_bytes // 3,
                          offload_folder=tmp_path / "off")
    placed, _ = load_model("demo:tiny-m", placement=plan)
    enc = tok(["Review: not bad at all\nSentiment:"], return_tensors="pt")
    gen = dict(max_new_tokens=6, do_sample=False, pad_token_id=tok.pad_token_id)
    assert plan.on_disk
    assert torch.equal(placed.generate(**enc, **gen), model.generate(**enc, **gen))


def test_placement_errors(saved, tmp_path):
    config = saved[1].config
    with pytest.raises(InsufficientMemory, match="reserving"):
        plan_placement(config, gpu_bytes=1000, reserve_bytes=5000)
    with pytest.raises(InsufficientMemory, match="disk offload is off"):
        plan_placement(config, cpu_bytes=1000, allow_disk=False)
    with pytest.raises(ConfigError, match="offload_folder"):
        plan_placement(config, cpu_bytes=1000)
    with pytest.raises(ConfigError) as e:
        plan_placement(config, gpu_bytes=-1, cpu_bytes=-5, dtype="int3")
    assert len(e.value.problems) == 3
