"""Test-only: a base model with a LoRA adapter applied, not merged (what a merged model is
checked against). Tests import it as ``tests.adapters``."""

from __future__ import annotations

from pathlib import Path

from rightsizer.inference import load_model


def load_with_adapter(base: str, adapter_dir: str | Path, dtype=None):
    """``base`` with the adapter applied (not merged), in eval mode."""
    import torch
    from peft import PeftModel

    model, _ = load_model(base, dtype=dtype or torch.float32)
    return PeftModel.from_pretrained(model, str(adapter_dir)).eval()
