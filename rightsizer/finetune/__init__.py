"""Fine-tuning: PEFT LoRA/QLoRA adapters through one entry point, in-process or distributed
(torchrun, DeepSpeed ZeRO from the memory plan), checkpointed and resumable.

``finetune`` (``launch``) is the entry point; ``task`` builds a task's runs on it: the
model-selection ladder's screening run and the pipeline's production adapter. See
docs/finetune.md.
"""

import warnings

# peft reads ``model.is_gradient_checkpointing``, which transformers 5 deprecated for
# ``is_activation_checkpointing``: a FutureWarning on every adapter load that is about the
# two libraries, not this project. Only that message is silenced.
warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated",
                        category=FutureWarning)


def finetune(config, nproc: int = 1, **kwargs) -> dict:
    """Run a fine-tune with ``nproc`` processes (see ``rightsizer.finetune.launch.finetune``)."""
    from rightsizer.finetune.launch import finetune as _finetune

    return _finetune(config, nproc=nproc, **kwargs)


__all__ = ["finetune"]
