"""Merge a LoRA adapter into its base model for serving.

Merging into a 4-bit (NF4) base rounds the merged weights back to 4 bits and degrades the
model. The base is therefore always reloaded from its original checkpoint in bf16 (never
the quantized copy used for QLoRA training), the adapter applied on top and merged there.
"""

from __future__ import annotations

from pathlib import Path

from rightsizer.atomic import atomic_dir
from rightsizer.errors import ConfigError
from rightsizer.inference import load_model
from rightsizer.models import resolve_model_ref


def merge_adapter(base: str, adapter_dir: str | Path, out_dir: str | Path, dtype=None,
                  trust_remote_code: bool = False) -> Path:
    """Reload ``base`` in ``dtype`` (default bf16), apply the adapter, merge, save atomically.
    ``trust_remote_code``: the task spec's (the base's own code runs only when it says so)."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise ConfigError(f"merge: {adapter_dir} is not an adapter folder (no adapter_config.json)")
    path = resolve_model_ref(base) if not Path(base).is_dir() else base
    model, _ = load_model(path, dtype=dtype or torch.bfloat16, trust_remote_code=trust_remote_code)
    merged = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        merged.save_pretrained(tmp, safe_serialization=True)
        try:
            AutoTokenizer.from_pretrained(str(adapter_dir), trust_remote_code=trust_remote_code).save_pretrained(tmp)
        except (OSError, ValueError):  # an adapter saved without its tokenizer: the base's
            AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code).save_pretrained(tmp)
    return out

