"""The entry point in one process: bad input, checkpoints, resume checks, merge, QLoRA."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from rightsizer.errors import ConfigError
from rightsizer.finetune.launch import finetune
from rightsizer.finetune.train import FinetuneConfig, bnb_available

# Answers the demo model does not already give (its pre-training reads "good" as positive):
# its loss on them starts high (about 3.4), so four steps lower it by a margin on any CPU.
# With the answers it already knows the loss starts near 0.01 and four steps move it by
# noise, up on some machines.
ROWS = [{"prompt": f"Review: item {i} is {'good' if i % 2 else 'bad'}\nSentiment:",
         "answer": "negative" if i % 2 else "positive"} for i in range(32)]


def _cfg(out: Path, **kw) -> dict:
    # the demo's LoRA values (tiny models from scratch), not the hub defaults
    base = dict(model="demo:tiny-s", train_data=ROWS, output_dir=str(out), steps=4,
                micro_batch_size=4, global_batch=4, save_steps=2, progress=False, seed=0,
                rank=8, alpha=16, learning_rate=3e-3, dropout=0.0, warmup_ratio=0.0)
    return {**base, **kw}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, demo_models) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ft-inproc")
    return out, finetune(_cfg(out))


def test_inprocess_run_writes_adapter_curves_and_marked_checkpoints(trained):
    out, result = trained
    assert result["world_size"] == 1 and result["strategy"] == "ddp"
    assert len(result["losses"]) == 4 and len(result["learning_rates"]) == 4
    assert result["losses"][-1] < result["losses"][0]
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    meta = json.loads((out / "adapter" / "training.json").read_text())
    assert meta["model"] == "demo:tiny-s" and meta["rank"] == 8
    marks = sorted(p.parent.name for p in (out / "checkpoints").glob("*/rightsizer-checkpoint.json"))
    assert marks == ["checkpoint-2", "checkpoint-4"]


def test_activation_checkpointing_trains_the_same_adapter(tmp_path, demo_models, trained):
    """gradient_checkpointing: true reaches the Trainer under transformers 5's name and
    recomputes activations without changing what is learned (same losses, a few ulps)."""
    import warnings

    with warnings.catch_warnings():
        # the old argument name would warn (and go away in transformers 6)
        warnings.filterwarnings("error", message="`gradient_checkpointing` is deprecated", category=FutureWarning)
        result = finetune(_cfg(tmp_path / "ckpt", gradient_checkpointing=True))
    assert result["losses"] == pytest.approx(trained[1]["losses"], rel=1e-4)


def test_the_progress_bar_prints_no_line_per_step(tmp_path, demo_models, capsys):
    """Every step is logged for the loss curve; the bar shows progress, the log dicts stay in
    the result instead of one printed line per step."""
    result = finetune(_cfg(tmp_path / "bar", progress=True))
    printed = capsys.readouterr()
    assert len(result["losses"]) == 4
    assert "'loss'" not in printed.out + printed.err and "4/4" in printed.err  # the bar ran


def _assert_no_adapter(out: Path):
    assert not (out / "adapter").exists()
    assert not list(out.glob("*adapter.tmp-*"))  # atomic_dir's temporary folder is .adapter.tmp-*


@pytest.mark.parametrize("kw, needle", [
    ({"target_modules": ["q_proj", "qkv"]}, "valid names: ['down_proj', 'gate_proj'"),
    ({"rank": 0}, "rank: 0; expected a positive integer"),
    ({"rank": -4}, "rank: -4"),
    ({"train_data": []}, "train split is empty"),
    ({"zero_stage": 4}, "zero_stage: 4; expected 0, 1, 2 or 3"),
    ({"zero_stage": -1}, "zero_stage: -1"),
    ({"quantization": "int3"}, "quantization: 'int3'"),
])
def test_bad_input_is_rejected_before_training(tmp_path, demo_models, kw, needle):
    out = tmp_path / "run"
    with pytest.raises(ConfigError) as e:
        finetune(_cfg(out, **kw), nproc=2)  # never launches: checked in this process first
    assert needle in str(e.value)
    _assert_no_adapter(out)


def test_all_problems_are_reported_together(tmp_path):
    with pytest.raises(ConfigError) as e:
        finetune(_cfg(tmp_path, rank=0, zero_stage=7, train_data=[], steps=-1))
    assert len(e.value.problems) == 4


def test_empty_train_file(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("\n")
    with pytest.raises(ConfigError, match="train split is empty"):
        finetune(_cfg(tmp_path / "run", train_data=str(data)))
    _assert_no_adapter(tmp_path / "run")


def test_checkpoint_from_a_different_base_model_is_rejected(trained, tmp_path):
    src, _ = trained
    out = tmp_path / "run"
    shutil.copytree(src / "checkpoints", out / "checkpoints")
    with pytest.raises(ConfigError) as e:
        finetune(_cfg(out, model="demo:tiny-m"))
    assert "was written for base model 'demo:tiny-s'" in str(e.value)
    assert "this run's base is 'demo:tiny-m'" in str(e.value)
    _assert_no_adapter(out)


def test_resuming_with_a_different_world_size_is_a_clear_error(trained, tmp_path):
    src, _ = trained
    out = tmp_path / "run"
    shutil.copytree(src / "checkpoints", out / "checkpoints")
    with pytest.raises(ConfigError) as e:
        finetune(_cfg(out), nproc=2)  # checked before any worker starts
    msg = str(e.value)
    assert "written by 1 process(es) but this run has 2" in msg
    assert "--nproc_per_node 1" in msg and "zero_to_fp32.py" in msg
    _assert_no_adapter(out)


def test_unfinished_checkpoint_is_skipped(trained, tmp_path):
    from rightsizer.finetune.checkpoint import latest_checkpoint

    src, _ = trained
    ckpts = tmp_path / "checkpoints"
    shutil.copytree(src / "checkpoints", ckpts)
    (ckpts / "checkpoint-4" / "rightsizer-checkpoint.json").unlink()  # killed while saving
    assert latest_checkpoint(ckpts)[0].name == "checkpoint-2"


def test_resume_true_continues_from_the_last_checkpoint(trained, tmp_path):
    src, ref = trained
    out = tmp_path / "run"
    shutil.copytree(src / "checkpoints", out / "checkpoints")
    shutil.rmtree(out / "checkpoints" / "checkpoint-4")
    result = finetune(_cfg(out))
    assert result["resumed_from"].endswith("checkpoint-2")
    assert result["losses"] == pytest.approx(ref["losses"], abs=1e-6)
    from safetensors.torch import load_file

    a = load_file(src / "adapter" / "adapter_model.safetensors")
    b = load_file(out / "adapter" / "adapter_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_merged_model_matches_base_plus_adapter(trained, tmp_path):
    from transformers import AutoModelForCausalLM

    from rightsizer.finetune.merge import merge_adapter
    from tests.adapters import load_with_adapter

    out, _ = trained
    merged_dir = merge_adapter("demo:tiny-s", out / "adapter", tmp_path / "merged")
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.bfloat16).eval()
    assert merged.dtype == torch.bfloat16
    assert not any("lora" in n for n, _ in merged.named_parameters())
    ids = torch.randint(5, 600, (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = load_with_adapter("demo:tiny-s", out / "adapter", dtype=torch.float32)(ids).logits
        base = load_with_adapter("demo:tiny-s", out / "adapter", dtype=torch.float32)
        with base.disable_adapter():
            plain = base(ids).logits
        got = merged(ids).logits.float()
    # The adapter changes the model far more than bf16 rounding of the merged weights does.
    assert (ref - plain).abs().max() > 0.1
    err = (got - ref).abs().max()
    assert err < 0.25 * (ref - plain).abs().max(), err
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9


def test_epochs_become_whole_steps_and_a_too_long_sequence_is_refused(tmp_path, demo_models):
    from rightsizer.finetune.train import total_steps

    assert total_steps(FinetuneConfig.from_dict(_cfg(tmp_path, steps=None, epochs=1.5,
                                                     global_batch=8)), 32) == 6
    assert total_steps(FinetuneConfig.from_dict(_cfg(tmp_path, steps=None)), 32) == 200
    with pytest.raises(ConfigError, match="give one budget, not both"):
        finetune(_cfg(tmp_path / "both", epochs=1))
    with pytest.raises(ConfigError, match=r"max_seq_len: 999 is longer than the context of "
                                          r"demo:tiny-s \(256 tokens\)"):
        finetune(_cfg(tmp_path / "long", max_seq_len=999))
    _assert_no_adapter(tmp_path / "long")


def test_an_epochs_run_trains_that_many_passes(tmp_path, demo_models):
    result = finetune(_cfg(tmp_path / "ep", steps=None, epochs=1, global_batch=8,
                           micro_batch_size=8, save_steps=100))
    assert result["steps"] == 4 and len(result["losses"]) == 4 and result["epochs"] == 1
    assert sorted(json.loads((tmp_path / "ep" / "ranks" / "rank0.json").read_text())["seen"]) \
        == list(range(32))  # one pass: every example once


@pytest.mark.skipif(bnb_available(), reason="bitsandbytes is installed")
def test_qlora_without_bitsandbytes_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="needs bitsandbytes"):
        finetune(_cfg(tmp_path / "run", quantization="nf4"))
    _assert_no_adapter(tmp_path / "run")


@pytest.mark.skipif(not bnb_available(), reason="bitsandbytes is not installed")
def test_qlora_nf4_trains_and_merges_into_a_bf16_base(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run"
    result = finetune(_cfg(out, quantization="nf4", merge=True))
    assert result["quantization"] == "nf4"
    merged = AutoModelForCausalLM.from_pretrained(result["merged_dir"])
    assert merged.dtype == torch.bfloat16


def test_config_rejects_unknown_fields(tmp_path):
    with pytest.raises(ConfigError, match="unknown fine-tune parameter"):
        FinetuneConfig.from_dict(_cfg(tmp_path, lora_rank=8))


def test_answers_end_with_the_eos_token_so_a_tuned_generator_stops(tmp_path, demo_models):
    """Every answer is trained with the end-of-sequence token after it: an adapter for a
    generation or extraction task learns where an answer ends, and greedy decoding with no
    stop rule returns the answer alone instead of running on to max_new_tokens."""
    from peft import PeftModel

    from rightsizer.finetune.data import tokenize_examples
    from rightsizer.inference import generate, load_model, load_tokenizer
    from rightsizer.models import resolve_model_ref

    base = resolve_model_ref("demo:tiny-s")
    tok = load_tokenizer(base)
    (row,) = tokenize_examples(tok, [("Review: fine\nSentiment:", "positive")], 64)
    assert row["input_ids"][-1] == row["labels"][-1] == tok.eos_token_id
    # a prompt format the demo models were not pre-trained on (they stop after their own
    # formats' answers): without the token the answers ran on ("negative negative negative ...")
    rows = [{"prompt": f"Item {i} ->", "answer": "positive" if i % 2 else "negative"} for i in range(32)]
    result = finetune(_cfg(tmp_path / "stop", train_data=rows, steps=40, global_batch=8, micro_batch_size=8))
    model, _ = load_model(base)
    model = PeftModel.from_pretrained(model, result["adapter_dir"])
    got = generate(model, tok, [r["prompt"] for r in rows[:8]], max_new_tokens=12, stop=None)
    assert set(got) <= {"positive", "negative"}, got  # one answer, then the end


def _remote_code_model(demo_models, folder: Path, marker: Path) -> Path:
    """The demo's tiny-s as a model with its own code (an auto_map to modules in its folder,
    which write ``marker`` when they run)."""
    shutil.copytree(demo_models / "models" / "tiny-s", folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="rightsizer-custom", architectures=["CustomForCausalLM"],
                  auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                            "AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "configuration_custom.py").write_text(
        f"open({str(marker)!r}, 'w').close()\n"
        "from transformers import LlamaConfig\n\n\n"
        "class CustomConfig(LlamaConfig):\n    model_type = 'rightsizer-custom'\n")
    (folder / "modeling_custom.py").write_text(
        "from transformers import LlamaForCausalLM\n\nfrom .configuration_custom import CustomConfig\n\n\n"
        "class CustomForCausalLM(LlamaForCausalLM):\n    config_class = CustomConfig\n")
    return folder


def test_the_trainer_runs_a_models_own_code_only_when_the_spec_says_so(tmp_path, demo_models):
    from rightsizer.finetune.merge import merge_adapter

    marker = tmp_path / "ran"
    model = _remote_code_model(demo_models, tmp_path / "custom", marker)
    with pytest.raises(ConfigError, match="trust_remote_code"):
        finetune(_cfg(tmp_path / "refused", model=str(model), steps=2))
    assert not marker.exists()  # refused before any of the model's code ran
    _assert_no_adapter(tmp_path / "refused")
    result = finetune(_cfg(tmp_path / "trusted", model=str(model), steps=2, trust_remote_code=True))
    assert marker.exists() and (Path(result["adapter_dir"]) / "adapter_model.safetensors").is_file()
    merged = merge_adapter(str(model), result["adapter_dir"], tmp_path / "merged", trust_remote_code=True)
    assert json.loads((merged / "config.json").read_text())["model_type"] == "rightsizer-custom"
    with pytest.raises(ConfigError, match="trust_remote_code"):
        merge_adapter(str(model), result["adapter_dir"], tmp_path / "merged-refused")
