"""Attention implementation: the fastest one the GPU, the packages and the model allow.

Order of preference: ``flash_attention_3`` (Hopper, compute capability 9.x, the
``flash_attn_interface`` package), ``flash_attention_2`` (compute capability >= 8.0, the
``flash_attn`` package), ``sdpa`` (PyTorch's fused attention; CPU and any GPU), and
``eager`` only when the model class supports nothing else. Every option considered is
recorded with the reason it was or was not taken, so the decision record can show it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from rightsizer.runtime.backends import normalize_device

IMPLEMENTATIONS = ("flash_attention_3", "flash_attention_2", "sdpa", "eager")


@dataclass
class AttentionChoice:
    implementation: str
    reason: str
    device: str
    considered: list[dict] = field(default_factory=list)

    def from_pretrained_kwargs(self) -> dict:
        return {"attn_implementation": self.implementation}

    def to_dict(self) -> dict:
        return asdict(self)


def _model_class(model_or_class):
    if model_or_class is None:
        return None
    if isinstance(model_or_class, type):
        return model_or_class
    return type(model_or_class)


def _flash_packages() -> tuple[bool, bool]:
    from transformers.utils import is_flash_attn_2_available, is_flash_attn_3_available

    return bool(is_flash_attn_3_available()), bool(is_flash_attn_2_available())


def choose_attention(device: str = "auto", model=None, dtype: torch.dtype = torch.bfloat16) -> AttentionChoice:
    """Pick the attention implementation for ``model`` (a model, its class, or None) on ``device``."""
    dev = normalize_device(device)
    cls = _model_class(model)
    supports_flash = True if cls is None else bool(getattr(cls, "_supports_flash_attn", False))
    supports_sdpa = True if cls is None else bool(getattr(cls, "_supports_sdpa", False))
    cc = torch.cuda.get_device_capability(torch.device(dev)) if dev.startswith("cuda") and torch.cuda.is_available() else None
    fa3_pkg, fa2_pkg = _flash_packages() if cc is not None else (False, False)
    half = dtype in (torch.bfloat16, torch.float16)
    considered = []

    def consider(impl: str, reason: str | None) -> bool:
        considered.append({"implementation": impl, "usable": reason is None, "reason": reason or "usable"})
        return reason is None

    def flash_reason(min_cc: tuple[int, int], max_major: int | None, pkg: bool, pkg_name: str) -> str | None:
        if cc is None:
            return "needs a CUDA GPU"
        if cc < min_cc or (max_major is not None and cc[0] > max_major):
            want = f"{min_cc[0]}.x" if max_major == min_cc[0] else f">= {min_cc[0]}.{min_cc[1]}"
            return f"needs compute capability {want}; this GPU has {cc[0]}.{cc[1]}"
        if not pkg:
            return f"the {pkg_name} package is not installed"
        if not supports_flash:
            return f"{cls.__name__} does not support flash attention"
        if not half:
            return f"needs bf16 or fp16 weights, not {dtype}"
        return None

    chosen = None
    if consider("flash_attention_3", flash_reason((9, 0), 9, fa3_pkg, "flash_attn_interface (FlashAttention-3)")):
        chosen = "flash_attention_3"
    if consider("flash_attention_2", flash_reason((8, 0), None, fa2_pkg, "flash_attn")) and chosen is None:
        chosen = "flash_attention_2"
    sdpa_reason = None
    if not hasattr(torch.nn.functional, "scaled_dot_product_attention"):
        sdpa_reason = "this torch has no scaled_dot_product_attention"
    elif not supports_sdpa:
        sdpa_reason = f"{cls.__name__} does not support sdpa"
    if consider("sdpa", sdpa_reason) and chosen is None:
        chosen = "sdpa"
    consider("eager", None)
    if chosen is None:
        chosen = "eager"
    reason = next(c["reason"] for c in considered if c["implementation"] == chosen)
    if chosen != considered[0]["implementation"]:
        skipped = "; ".join(f"{c['implementation']}: {c['reason']}" for c in considered
                            if c["implementation"] != chosen and not c["usable"])
        reason = f"best usable ({skipped})"
    return AttentionChoice(implementation=chosen, reason=reason, device=dev, considered=considered)
