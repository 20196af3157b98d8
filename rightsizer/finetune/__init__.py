"""Fine-tuning: PEFT LoRA adapters trained through Accelerate."""

from rightsizer.finetune.lora import LoraResult, default_target_modules, train_lora

__all__ = ["LoraResult", "default_target_modules", "train_lora"]
