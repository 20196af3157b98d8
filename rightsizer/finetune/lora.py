"""LoRA target modules: the default projections per architecture, and the check that the
names asked for exist in the model (an unknown name fails with the valid ones)."""

from __future__ import annotations

import torch

from rightsizer.errors import ConfigError

# Attention and MLP projections per architecture family (model_type in config.json).
TARGET_MODULES = {
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "mistral": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "gemma2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
    "gpt2": ["c_attn", "c_proj", "c_fc"],
    "gpt_neox": ["query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"],
}


def check_targets(model, targets: list[str]) -> None:
    """ConfigError naming the unknown target modules and the valid (linear) names."""
    leaf_names = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                  if isinstance(m, torch.nn.Linear) or type(m).__name__.endswith("Linear")}
    unknown = sorted(set(targets) - leaf_names)
    if unknown:
        raise ConfigError(f"target_modules: {unknown} not found in the model; "
                          f"valid names: {sorted(leaf_names)}")
