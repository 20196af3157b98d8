"""Memory plan -> DeepSpeed config, the config/arguments cross-check, multi-node specs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rightsizer.errors import ConfigError, InsufficientMemory
from rightsizer.finetune.plan import (ModelShape, check_deepspeed_config, check_training_args,
                                      deepspeed_config, plan_training, shape_for_lora)

FIXTURES = Path(__file__).parent / "fixtures" / "configs"
LLAMA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def llama7b(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("llama7b")
    shutil.copy(FIXTURES / "llama-2-7b.json", d / "config.json")
    return d


@pytest.fixture(scope="module")
def shape7b(llama7b) -> ModelShape:
    return shape_for_lora(str(llama7b), LLAMA_TARGETS, rank=16)


def test_shape_counts_llama7b_and_its_lora_params(shape7b):
    assert 6.7e9 < shape7b.total_params < 6.8e9
    # r * (in + out) per target module, 32 layers: q,k,v,o 4096x4096; gate, up 4096->11008; down
    per_layer = 16 * (4 * (4096 + 4096) + 2 * (4096 + 11008) + (11008 + 4096))
    assert shape7b.trainable_params == 32 * per_layer


def test_lora_7b_fits_one_80gb_gpu_without_sharding(shape7b):
    plan = plan_training(shape7b, gpu_memory_gb=80, n_gpus=1, seq_len=1024, global_batch=16)
    assert (plan.zero_stage, plan.offload_optimizer, plan.offload_params) == (0, False, False)
    assert plan.global_batch >= 16 and plan.per_gpu_bytes <= 80 * 1024**3


def test_small_gpus_get_zero3_and_then_offload(shape7b):
    # bf16 7B weights (13.5 GB) do not fit a 12 GB card: ZeRO-3 across 4 shards them.
    plan = plan_training(shape7b, gpu_memory_gb=12, n_gpus=4, seq_len=512, global_batch=32)
    assert plan.zero_stage == 3 and not plan.offload_params
    # On one such card only parameter offload is left.
    plan1 = plan_training(shape7b, gpu_memory_gb=12, n_gpus=1, seq_len=512, global_batch=32)
    assert plan1.zero_stage == 3 and plan1.offload_params and plan1.offload_optimizer
    # A 4-bit base (QLoRA) fits the single card without offload.
    q = plan_training(shape7b, gpu_memory_gb=12, n_gpus=1, seq_len=512, global_batch=32,
                      weight_precision="nf4")
    assert q.zero_stage == 0 and not q.offload_params


def test_full_finetune_prefers_zero2_offload_before_zero3(llama7b):
    full = shape_for_lora(str(llama7b), None, rank=8, full_finetune=True)
    plan = plan_training(full, gpu_memory_gb=80, n_gpus=2, seq_len=512, global_batch=16)
    assert plan.zero_stage >= 2
    with pytest.raises(InsufficientMemory, match="do not fit"):
        plan_training(full, gpu_memory_gb=4, n_gpus=1, seq_len=4096)


def test_batch_layout_multiplies_to_the_global_batch(shape7b):
    plan = plan_training(shape7b, gpu_memory_gb=24, n_gpus=2, seq_len=2048, global_batch=64)
    assert plan.micro_batch * plan.grad_accum * 2 == plan.global_batch >= 64
    cfg = deepspeed_config(plan)
    assert cfg["train_batch_size"] == plan.global_batch
    assert cfg["train_micro_batch_size_per_gpu"] == plan.micro_batch


def test_zero3_config_lowers_persistence_threshold_for_small_models():
    tiny = ModelShape(total_params=140_000, trainable_params=20_000, hidden_size=64, num_layers=2,
                      vocab_size=640)
    plan = plan_training(tiny, gpu_memory_gb=1.5, n_gpus=2, seq_len=64, zero_stage=3)
    z = deepspeed_config(plan)["zero_optimization"]
    # DeepSpeed's default 1e5 would keep every tensor of this model (<= 64 x 192) whole.
    assert z["stage"] == 3 and z["stage3_param_persistence_threshold"] == 640
    assert z["stage3_gather_16bit_weights_on_model_save"] is False


def test_offload_adds_the_cpu_optimizer(shape7b):
    plan = plan_training(shape7b, gpu_memory_gb=12, n_gpus=1, seq_len=512)
    cfg = deepspeed_config(plan, learning_rate=2e-4)
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["optimizer"]["params"]["lr"] == 2e-4
    assert check_deepspeed_config(cfg) == []


def test_every_mismatch_is_reported_at_once(shape7b):
    plan = plan_training(shape7b, gpu_memory_gb=12, n_gpus=1, seq_len=512)
    cfg = deepspeed_config(plan, learning_rate=2e-4)
    with pytest.raises(ConfigError) as e:
        check_training_args(cfg, per_device_train_batch_size=plan.micro_batch + 1,
                            gradient_accumulation_steps=plan.grad_accum + 1, world_size=2,
                            learning_rate=1e-3, max_grad_norm=0.5, bf16=False, fp16=True)
    text = str(e.value)
    for key in ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                "gradient_clipping", "bf16.enabled", "fp16.enabled", "optimizer.params.lr"):
        assert key in text, key
    assert len(e.value.problems) == 7
    # The same values pass.
    check_training_args(cfg, per_device_train_batch_size=plan.micro_batch,
                        gradient_accumulation_steps=plan.grad_accum, world_size=1,
                        learning_rate=2e-4, max_grad_norm=1.0, bf16=True, fp16=False)


@pytest.mark.parametrize("stage", [-1, 4, "3", 2.5])
def test_zero_stage_outside_0_to_3_is_rejected(stage):
    problems = check_deepspeed_config({"zero_optimization": {"stage": stage}})
    assert problems and "expected 0, 1, 2 or 3" in problems[0]
    with pytest.raises(ConfigError, match="zero_stage"):
        plan_training(ModelShape(1000, 10, 8, 1, 10), gpu_memory_gb=8, zero_stage=stage)


def test_inconsistent_offload_is_rejected():
    problems = check_deepspeed_config({"zero_optimization": {
        "stage": 2, "offload_param": {"device": "cpu"}}, "bf16": {"enabled": True},
        "fp16": {"enabled": True}})
    assert len(problems) == 2


def test_trainjob_manifest_spec():
    from rightsizer.finetune.launch import trainjob_manifest

    m = trainjob_manifest("ft-sentiment", "registry/rightsizer:1", "/data/job.json", num_nodes=2,
                          gpus_per_node=8)
    assert m["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and m["kind"] == "TrainJob"
    t = m["spec"]["trainer"]
    assert t["numNodes"] == 2 and t["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == 8
    assert t["command"][:3] == ["torchrun", "-m", "rightsizer.finetune.train"]
    assert m["spec"]["runtimeRef"]["name"] == "torch-distributed"
    json.dumps(m)
    with pytest.raises(ConfigError) as e:
        trainjob_manifest("Bad_Name", "img", "/c.json", num_nodes=0, gpus_per_node=-1)
    assert len(e.value.problems) == 3


def test_mpi_rank_discovery(monkeypatch):
    import os

    from rightsizer.finetune.mpi import discover_mpi_env

    # discover_mpi_env exports RANK/WORLD_SIZE/... into os.environ: give it a copy, so they
    # do not leak into later tests (a leaked WORLD_SIZE makes Accelerate expect multinode)
    monkeypatch.setattr(os, "environ", os.environ.copy())
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(k, raising=False)
    assert discover_mpi_env() == {}
    monkeypatch.setenv("OMPI_COMM_WORLD_RANK", "3")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "8")
    monkeypatch.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "1")
    monkeypatch.setenv("MASTER_ADDR", "job-worker-0")
    found = discover_mpi_env()
    assert found == {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "MASTER_PORT": "29500"}
    assert os.environ["RANK"] == "3" and os.environ["WORLD_SIZE"] == "8"


def test_an_mpi_launched_node_is_found_without_touching_the_environment(monkeypatch):
    """size_and_deploy's multi-node step: MPI starts one process per node, which runs
    torchrun for its GPUs; the node's rank, count and rendezvous come from MPI."""
    import os

    from rightsizer.finetune.mpi import MpiNode, mpi_node

    for k in ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "PMI_RANK", "PMI_SIZE", "PMIX_RANK",
              "PMIX_SIZE", "MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert mpi_node() is None
    monkeypatch.setenv("PMI_RANK", "1")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "finetune-worker-0")
    monkeypatch.setenv("MASTER_PORT", "29611")
    before = dict(os.environ)
    assert mpi_node() == MpiNode(rank=1, count=2, master_addr="finetune-worker-0", master_port=29611)
    assert dict(os.environ) == before  # torchrun sets each worker's RANK / WORLD_SIZE
    monkeypatch.setenv("PMI_SIZE", "two")
    with pytest.raises(RuntimeError, match="PMI_SIZE='two'.*expected integers"):
        mpi_node()


# --------------------------------------------------------------------------- strategy from memory, hub-sized
EXAMPLES = Path(__file__).resolve().parents[1] / "tasks" / "examples" / "configs"


@pytest.mark.parametrize("config, gpu_gb, n, expected", [
    # (model, GiB per GPU, GPUs) -> (base, ZeRO stage, optimizer offload, parameter offload)
    ("qwen2.5-0.5b", 24, 1, ("bf16", 0, False, False)),  # one process
    ("qwen2.5-0.5b", 80, 4, ("bf16", 0, False, False)),  # DDP: the adapter is small, no sharding needed
    ("llama-3.1-8b", 80, 1, ("bf16", 0, False, False)),
    ("llama-3.1-8b", 24, 1, ("bf16", 0, False, False)),  # 15 GiB of bf16 weights fit a 24 GB card
    ("llama-3.1-8b", 16, 1, ("nf4", 0, False, False)),   # they do not fit 16 GB: QLoRA
    ("llama-3.1-8b", 16, 4, ("bf16", 3, False, False)),  # ...unless four cards shard them (ZeRO-3)
    ("llama-2-70b", 80, 8, ("bf16", 3, False, False)),   # 128 GiB of bf16 weights over eight 80 GB
    ("llama-2-70b", 80, 1, ("nf4", 0, False, False)),    # one 80 GB card: only a 4-bit base
    ("llama-2-70b", 24, 4, ("nf4", 3, False, False)),    # four 24 GB cards: 4-bit and sharded
])
def test_the_memory_plan_picks_the_strategy_for_hub_models(config, gpu_gb, n, expected):
    from rightsizer.finetune.plan import plan_for_gpu

    shape = ModelShape.from_config(str(EXAMPLES / f"{config}.json"), rank=16)
    plan = plan_for_gpu(shape, gpu_memory_gb=gpu_gb, n_gpus=n, seq_len=1024, global_batch=16)
    assert (plan.weight_precision, plan.zero_stage, plan.offload_optimizer, plan.offload_params) == expected
    assert plan.per_gpu_bytes <= gpu_gb * 1024**3


def test_the_plan_sizes_weights_with_the_sizing_engine(llama7b, shape7b):
    from rightsizer.sizing import count_params
    from rightsizer.sizing.memory import weights_bytes

    # the meta model and the config alone give the same shape, and the sizing engine's bytes
    from_config = ModelShape.from_config(str(llama7b / "config.json"), rank=16)
    assert from_config.total_params == shape7b.total_params == count_params(str(llama7b)).total
    assert from_config.trainable_params == shape7b.trainable_params
    for precision in ("bf16", "nf4"):
        assert shape7b.frozen_weight_bytes(precision) == weights_bytes(count_params(str(llama7b)), precision)
    # a 4-bit base keeps embeddings and the LM head at 16-bit, as bitsandbytes does
    p = count_params(str(llama7b))
    assert shape7b.frozen_weight_bytes("nf4") > p.total * 0.5


def test_without_qlora_a_base_that_does_not_fit_names_what_would():
    from rightsizer.finetune.plan import plan_for_gpu

    shape = ModelShape.from_config(str(EXAMPLES / "llama-2-70b.json"), rank=16)
    # only parameter offload is left for a 16-bit base on one card
    plan = plan_for_gpu(shape, gpu_memory_gb=80, n_gpus=1, seq_len=1024, allow_qlora=False)
    assert plan.weight_precision == "bf16" and plan.offload_params
    with pytest.raises(InsufficientMemory, match="4-bit base"):
        plan_for_gpu(shape, gpu_memory_gb=8, n_gpus=1, seq_len=4096, allow_qlora=False, gradient_checkpointing=False)


def test_the_trainer_plans_with_auto_quantization(llama7b):
    """``quantization="auto"`` (the pipeline's production step): the trainer's plan, with a pinned
    or a free ZeRO stage; without bitsandbytes and a GPU no 4-bit base is planned."""
    from rightsizer.finetune.train import FinetuneConfig, make_plan

    for zero_stage in (None, 3):
        cfg = FinetuneConfig(model=str(llama7b), train_data=[], output_dir="unused", quantization="auto",
                             gpu_memory_gb=80, zero_stage=zero_stage, mixed_precision="bf16")
        plan, ds, _ = make_plan(cfg, str(llama7b), LLAMA_TARGETS, world_size=1)
        assert plan.weight_precision == "bf16" and ds["zero_optimization"]["stage"] == (zero_stage or 0)
    small = FinetuneConfig(model=str(llama7b), train_data=[], output_dir="unused", quantization="auto",
                           gpu_memory_gb=12, mixed_precision="bf16")
    plan, _, _ = make_plan(small, str(llama7b), LLAMA_TARGETS, world_size=1)
    assert plan.weight_precision == "bf16" and plan.offload_params  # CPU here: parameter offload, not QLoRA
