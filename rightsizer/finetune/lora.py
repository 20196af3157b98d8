"""LoRA target modules: the architecture's default (its family's list, or PEFT's
``all-linear``), and the check that the names asked for exist in the model (an unknown name
fails with the valid ones)."""

from __future__ import annotations

import torch

from rightsizer.errors import ConfigError
from rightsizer.families import lora_targets

ALL_LINEAR = "all-linear"  # PEFT: every linear (and Conv1D) layer of the blocks, not the head


def is_linear(module: torch.nn.Module) -> bool:
    """A layer LoRA can adapt: ``nn.Linear``, a quantized or wrapped linear, or GPT-2's ``Conv1D``."""
    return isinstance(module, torch.nn.Linear) or type(module).__name__.endswith("Linear") \
        or type(module).__name__ == "Conv1D"


def default_targets(model_type: str | None, model=None) -> list[str] | str:
    """The default for ``model_type``: the family's projections (those ``model`` has, when
    given: a mixture-of-experts model keeps its experts' weights fused, not as linear layers),
    else ``"all-linear"``."""
    targets = lora_targets(model_type)
    if model is None or targets == ALL_LINEAR:
        return targets
    present = set(linear_leaf_names(model))
    return [t for t in targets if t in present] or ALL_LINEAR


def linear_leaf_names(model) -> list[str]:
    """The leaf names of the layers LoRA can target, the output head left out."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if is_linear(m) and m is not head})


def check_targets(model, targets: list[str] | str) -> None:
    """ConfigError naming the unknown target modules and the valid (linear) names."""
    if targets == ALL_LINEAR:
        return
    leaf_names = set(linear_leaf_names(model))
    unknown = sorted(set(targets) - leaf_names)
    if unknown:
        raise ConfigError(f"target_modules: {unknown} not found in the model; "
                          f"valid names: {sorted(leaf_names)}")


def targeted_layers(model, targets: list[str] | str) -> list[tuple[str, torch.nn.Module]]:
    """The layers ``targets`` select (``"all-linear"``: every linear layer but the head)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return [(n, m) for n, m in model.named_modules() if is_linear(m) and m is not head
            and (targets == ALL_LINEAR or n.rsplit(".", 1)[-1] in targets)]
