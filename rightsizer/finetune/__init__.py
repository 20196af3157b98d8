"""Fine-tuning: PEFT LoRA/QLoRA adapters, in-process or distributed (torchrun, DeepSpeed).

``train_lora`` is the model-selection ladder's quick in-process rung. ``finetune`` (in
``launch``) is the full entry point: memory plan -> DeepSpeed config, 1..N processes,
checkpoint/resume, QLoRA, merge. See docs/finetune.md.
"""

from rightsizer.finetune.lora import LoraResult, default_target_modules, train_lora


def finetune(config, nproc: int = 1, **kwargs) -> dict:
    """Run a fine-tune with ``nproc`` processes (see ``rightsizer.finetune.launch.finetune``)."""
    from rightsizer.finetune.launch import finetune as _finetune

    return _finetune(config, nproc=nproc, **kwargs)


__all__ = ["LoraResult", "default_target_modules", "finetune", "train_lora"]
