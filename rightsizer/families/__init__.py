"""One home per architecture family: what the project needs to know about a model's code.

A family module (one file in this package, found by :func:`registry`) defines ``FAMILY``, a
:class:`Family` that says, for the ``model_type`` values it covers:

- how the parameters are laid out (:class:`ArchRules`, per ``model_type``): the sizing engine
  counts parameters and FLOPs from them, exactly as transformers builds the model;
- the LoRA default targets (None: PEFT's ``all-linear``, every linear layer of the blocks);
- where the decoder blocks are (``blocks``), which the quantizers' mixed precision keeps
  high at the ends;
- the config keys that hold the context length;
- the end-of-turn tokens its chat templates end an answer with (generation stops there).

An architecture no family covers is still sized (``rightsizer.sizing.params``: a meta-device
parameter count and generic rules, marked ``generic`` in the decision record), fine-tuned
with ``all-linear`` and quantized; only what a family adds (exact FLOP layout, a narrower
LoRA default) is missing. Adding a family: one module here and its entry in the test zoo
(``tests/zoo.py``); docs/bring-your-own-models.md says more.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from functools import cache


@dataclass(frozen=True)
class ArchRules:
    """How one ``model_type`` lays out its parameters (defaults mirror transformers)."""

    layout: str  # "llama" (separate q/k/v/o, gated MLP), "gpt2" or "gpt_neox"
    tied_default: bool
    qkv_bias: bool | None = None  # None: read ``attention_bias`` (default False)
    o_bias: bool | None = None  # None: same as ``attention_bias``
    norm: str = "rms"  # "rms" (weight only) or "layer" (weight + bias)
    norms_per_layer: int = 2
    qk_norm: str = "none"  # "head": RMSNorm over head_dim (qwen3, gemma3); "full": over q/kv dims (olmo2)
    gated_mlp: bool = True
    moe: bool = False
    moe_intermediate_key: str | None = None  # the experts' width, when not ``intermediate_size``
    sliding: str = "none"  # "all" (every layer), "alternate" (gemma2 even layers), "types" (layer_types), "none"


@dataclass(frozen=True)
class Family:
    """What one architecture family needs from the project (see the module docstring)."""

    name: str
    rules: dict[str, ArchRules]
    lora_targets: tuple[str, ...] | None = None  # None: PEFT's "all-linear"
    blocks: str = "model.layers"
    context_keys: tuple[str, ...] = ("max_position_embeddings",)
    end_of_turn: tuple[str, ...] = ()
    notes: str = ""
    model_types: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "model_types", tuple(sorted(self.rules)))


@cache
def registry() -> dict[str, Family]:
    """Every family module of this package, by ``model_type``."""
    by_type: dict[str, Family] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        family = importlib.import_module(f"{__name__}.{info.name}").FAMILY
        for model_type in family.model_types:
            if model_type in by_type:
                raise RuntimeError(f"model_type {model_type!r} is in two families: "
                                   f"{by_type[model_type].name} and {family.name}")
            by_type[model_type] = family
    return by_type


def family_of(model_type: str | None) -> Family | None:
    """The family that covers ``model_type``, or None (generic rules apply)."""
    return registry().get(model_type or "")


def rules_for(model_type: str | None) -> ArchRules | None:
    family = family_of(model_type)
    return family.rules[model_type] if family else None


def supported_model_types() -> tuple[str, ...]:
    return tuple(sorted(registry()))


def lora_targets(model_type: str | None) -> list[str] | str:
    """The LoRA default targets: the family's list, or PEFT's ``"all-linear"``."""
    family = family_of(model_type)
    return list(family.lora_targets) if family and family.lora_targets else "all-linear"


def context_length(config) -> int | None:
    """The context length of a config (object or dict): the family's keys, then the usual ones."""
    get = config.get if isinstance(config, dict) else (lambda k: getattr(config, k, None))
    family = family_of(get("model_type"))
    keys = (family.context_keys if family else ()) + (
        "max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")
    for key in keys:
        value = get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


def end_of_turn_tokens(model_type: str | None) -> tuple[str, ...]:
    family = family_of(model_type)
    return family.end_of_turn if family else ()
