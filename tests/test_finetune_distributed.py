"""Real distributed runs: torchrun with 2 CPU processes on gloo under DeepSpeed ZeRO-3.

(DDP over 2 processes is exercised through the MLRun handler, test_finetune_function.py.)

Each launch costs ~30 s here (two Python processes importing torch/transformers/deepspeed
on shared cores). The first DeepSpeed launch on a machine also JIT-builds DeepSpeed's
shared-memory comm op (30-90 s, then cached in ~/.cache/torch_extensions).
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rightsizer.finetune.launch import finetune

pytestmark = pytest.mark.slow  # 3 torchrun launches of 2 processes (~30 s each here)

ROWS = [{"prompt": f"Review: item {i} is {'good' if i % 3 else 'bad'}\nSentiment:",
         "answer": "positive" if i % 3 else "negative"} for i in range(64)]
# 2 ranks x micro-batch 4 = global batch 8; 6 steps, a checkpoint every 3.
# The demo's LoRA values (tiny models from scratch), not the hub defaults.
BASE = dict(model="demo:tiny-s", train_data=ROWS, steps=6, micro_batch_size=4, global_batch=8,
            save_steps=3, progress=False, seed=0, learning_rate=3e-3, rank=8, alpha=16,
            dropout=0.0, warmup_ratio=0.0)


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]


def _adapter(out: Path) -> dict:
    return load_file(out / "adapter" / "adapter_model.safetensors")


@pytest.fixture(scope="module")
def zero3(tmp_path_factory, demo_models):
    out = tmp_path_factory.mktemp("zero3")
    return out, finetune({**BASE, "output_dir": str(out), "zero_stage": 3}, nproc=2, stream=False)


def _assert_two_ranks_on_different_data(out: Path):
    r0, r1 = _ranks(out)
    for r in (r0, r1):
        # torch.distributed, the Trainer's arguments and the launcher agree: 2 processes.
        assert r["world_size"] == r["dist_world_size"] == r["args_world_size"] == 2
        assert len(r["seen"]) >= 6 * 4
    # Each rank trained on its own shard: no example index seen by both in the first epoch.
    first0, first1 = set(r0["seen"][:24]), set(r1["seen"][:24])
    assert first0 and first1 and not first0 & first1


def test_trainer_with_deepspeed_under_torchrun_on_cpu_sees_world_size_2(zero3):
    out, result = zero3
    assert result["strategy"] == "deepspeed-zero3" and result["world_size"] == 2
    _assert_two_ranks_on_different_data(out)


def test_zero3_on_2_ranks_trains_like_one_process_with_accumulation(zero3, tmp_path):
    # 2 ranks x micro-batch 4 == 1 process x micro-batch 4 x 2 accumulation steps: same
    # global batches (the sampler order is the same), so the same losses.
    one = finetune({**BASE, "output_dir": str(tmp_path), "zero_stage": 0, "grad_accum": 2})
    assert one["world_size"] == 1 and one["grad_accum"] == 2
    assert zero3[1]["losses"] == pytest.approx(one["losses"], rel=1e-4)


def test_zero3_actually_partitions_the_tiny_model(zero3):
    out, _ = zero3
    for r in _ranks(out):
        part = r["partition"]
        assert part["zero_params"] > 0 and part["partitioned_params"] >= 0.5 * part["zero_params"]
        # Each of the 2 ranks holds about half of the elements.
        assert part["elements_held"] < 0.6 * part["elements_total"]


def test_zero3_lora_adapter_is_not_empty_and_loads_back(zero3):
    from tests.adapters import load_with_adapter

    out, _ = zero3
    sd = _adapter(out)
    assert sd and all(t.numel() > 0 for t in sd.values())
    assert any(k.endswith("lora_B.weight") and t.abs().sum() > 0 for k, t in sd.items())
    model = load_with_adapter("demo:tiny-s", out / "adapter")
    loaded = {n: p for n, p in model.named_parameters() if "lora_B" in n}
    assert loaded and all(p.abs().sum() > 0 for p in loaded.values())
    ids = torch.tensor([[1, 5, 9, 13, 17]])
    with torch.no_grad():
        with_adapter = model(ids).logits
        with model.disable_adapter():
            without = model(ids).logits
    assert (with_adapter - without).abs().max() > 1e-3


def test_kill_9_of_one_rank_then_rerun_resumes_to_the_same_adapter(zero3, tmp_path):
    ref_out, _ = zero3
    out = tmp_path / "killed"
    cfg = {**BASE, "output_dir": str(out), "zero_stage": 3}
    outcome = {}

    def run():
        try:
            outcome["result"] = finetune(cfg, nproc=2, stream=False,
                                         env={"RIGHTSIZER_FT_STEP_SLEEP": "0.8"})
        except Exception as e:  # noqa: BLE001 - the killed run must fail
            outcome["error"] = e

    t = threading.Thread(target=run)
    t.start()
    marker = out / "checkpoints" / "checkpoint-3" / "rightsizer-checkpoint.json"
    deadline = time.time() + 400
    while not marker.is_file() and time.time() < deadline and t.is_alive():
        time.sleep(0.2)
    assert marker.is_file(), outcome
    pid = int((out / "ranks" / "rank1.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    t.join(300)
    assert "error" in outcome, "the run finished before the kill"
    assert not (out / "adapter").exists()

    result = finetune(cfg, nproc=2, stream=False)
    assert result["resumed_from"].endswith("checkpoint-3")
    ref, got = _adapter(ref_out), _adapter(out)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), max(
        float((ref[k] - got[k]).abs().max()) for k in ref)


def test_two_nodes_of_one_process_train_the_adapter_of_one_node_of_two(zero3, tmp_path):
    """The multi-node path of size_and_deploy's finetune step (finetune_nodes > 1, one MPI
    process per node running torchrun), run for real as two nodes on this machine: node 0
    and node 1 meet at node 0's rendezvous, share the output folder, and train the adapter
    that 2 processes on one node train. Node 1 returns without reading the result."""
    from rightsizer.finetune.launch import free_port
    from rightsizer.finetune.mpi import MpiNode

    ref_out, ref_result = zero3
    out = tmp_path / "two-nodes"
    cfg = {**BASE, "output_dir": str(out), "zero_stage": 3}
    port, results = free_port(), {}

    def node(rank: int) -> None:
        try:
            results[rank] = finetune(cfg, nproc=1, stream=False,
                                     node=MpiNode(rank=rank, count=2, master_addr="127.0.0.1",
                                                  master_port=port))
        except Exception as e:  # noqa: BLE001 - reported by the assertion below
            results[rank] = e

    threads = [threading.Thread(target=node, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    assert results[1] == {"node_rank": 1, "world_size": 2}, results
    assert results[0]["world_size"] == 2 and results[0]["strategy"] == ref_result["strategy"], results
    ref, got = _adapter(ref_out), _adapter(out)
    assert ref.keys() == got.keys()
    assert all(torch.equal(ref[k], got[k]) for k in ref), max(
        float((ref[k] - got[k]).abs().max()) for k in ref)

