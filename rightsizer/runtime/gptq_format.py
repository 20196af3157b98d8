"""Load a GPTQ checkpoint in the main environment, on PyTorch's own int4 kernel.

The GPTQ step (``functions/quantize_gptq.py``) runs gptqmodel in its own environment,
because gptqmodel does not fit beside mlrun 1.12. Its output is a standard GPTQ checkpoint
(``quantize_config.json`` plus ``qweight``/``qzeros``/``scales``/``g_idx`` tensors), which
vLLM or TGI can serve as it is. To evaluate and serve it here without gptqmodel, each GPTQ
layer is converted, exactly, to an :class:`Int4PackedLinear`:

    GPTQ:     w = scale * (q - z)                   q, z in 0..15 (v1 files store z - 1)
    tinygemm: w = (q - 8) * scale + zero   with     zero = scale * (8 - z)

Non-contiguous groups (act-order ``g_idx``) become an input permutation. Only 4-bit
checkpoints load this way (the kernel is 4-bit); anything else is a ConfigError. On CUDA
the same conversion feeds torch's tinygemm kernel (bf16).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from rightsizer.errors import ConfigError
from rightsizer.runtime import int4pack

QUANTIZE_CONFIG = "quantize_config.json"
FORMATS = ("gptq", "gptq_v2")


def read_gptq_config(model_dir: str | Path) -> dict:
    """The checkpoint's GPTQ settings, checked: 4 bits, a GPTQ format, a positive group size."""
    path = Path(model_dir) / QUANTIZE_CONFIG
    cfg = None
    if path.is_file():
        cfg = json.loads(path.read_text())
    else:
        config_json = Path(model_dir) / "config.json"
        if config_json.is_file():
            cfg = json.loads(config_json.read_text()).get("quantization_config")
    if not cfg:
        raise ConfigError(f"{model_dir}: not a GPTQ checkpoint (no {QUANTIZE_CONFIG} and no "
                          "quantization_config in config.json)")
    fmt = cfg.get("checkpoint_format") or cfg.get("format") or "gptq"
    problems = []
    if cfg.get("quant_method", "gptq") != "gptq":
        problems.append(f"quant_method: {cfg.get('quant_method')!r}; this loader reads 'gptq'")
    if cfg.get("bits") != 4:
        problems.append(f"bits: {cfg.get('bits')!r}; only 4-bit GPTQ loads on the int4 kernel "
                        "(serve 8-bit GPTQ with vLLM or gptqmodel)")
    if fmt not in FORMATS:
        problems.append(f"checkpoint_format: {fmt!r}; expected one of {list(FORMATS)}")
    group = cfg.get("group_size")
    if not isinstance(group, int) or group <= 0:
        problems.append(f"group_size: {group!r}; expected a positive integer (per-column -1 is not supported)")
    if problems:
        raise ConfigError(problems, source=str(path))
    return {**cfg, "checkpoint_format": fmt}


def unpack_int4(packed: torch.Tensor, dim: int) -> torch.Tensor:
    """Unpack int32 words holding eight 4-bit values (lowest bits first) along ``dim``."""
    shifts = torch.arange(0, 32, 4, dtype=torch.int32)
    p = packed.to(torch.int32)
    if dim == 0:  # [R/8, C] -> [R, C]
        vals = (p.unsqueeze(1) >> shifts.view(1, 8, 1)) & 0xF
        return vals.reshape(p.shape[0] * 8, p.shape[1])
    vals = (p.unsqueeze(2) >> shifts.view(1, 1, 8)) & 0xF  # [R, C/8] -> [R, C]
    return vals.reshape(p.shape[0], p.shape[1] * 8)


def gptq_to_int4pack(qweight: torch.Tensor, qzeros: torch.Tensor, scales: torch.Tensor,
                     g_idx: torch.Tensor | None, group_size: int, checkpoint_format: str = "gptq",
                     bias: torch.Tensor | None = None, dtype: torch.dtype = torch.float32,
                     name: str = "layer", device: str = "cpu") -> int4pack.Int4PackedLinear:
    """One GPTQ layer as an ``Int4PackedLinear`` that computes the same weights."""
    q = unpack_int4(qweight, 0)  # [K, N]
    k, n = q.shape
    z = unpack_int4(qzeros, 1)[:, :n]  # [K/G, N]
    if checkpoint_format == "gptq":  # v1 files store z - 1
        z = z + 1
    groups = scales.shape[0]
    if g_idx is None:
        g_idx = torch.arange(k, dtype=torch.int32) // group_size
    g_idx = g_idx.to(torch.long)
    if scales.shape != (groups, n) or z.shape != (groups, n) or g_idx.shape != (k,) or k != groups * group_size:
        raise ConfigError(f"{name}: GPTQ tensors do not agree (qweight {tuple(qweight.shape)}, qzeros "
                          f"{tuple(qzeros.shape)}, scales {tuple(scales.shape)}, g_idx {tuple(g_idx.shape)}, "
                          f"group_size {group_size})")
    perm = None
    natural = torch.arange(k) // group_size
    if not torch.equal(g_idx, natural):
        perm = torch.argsort(g_idx, stable=True)
        if not torch.equal(g_idx[perm], natural):
            raise ConfigError(f"{name}: g_idx groups are not all of size {group_size}; cannot pack")
        q = q[perm]
    scale = scales.float().t().contiguous()  # [N, K/G]
    zero = scale * (8.0 - z.float().t())
    try:
        return int4pack.Int4PackedLinear.from_quantized(q.t().contiguous(), scale, zero, group_size,
                                                       dtype=dtype, bias=bias, perm=perm, device=device)
    except ValueError as e:  # shapes the kernel cannot take
        raise ConfigError(f"{name}: {e}") from None


def _read_tensors(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        files = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    else:
        files = [p.name for p in model_dir.glob("*.safetensors")]
    if not files:
        raise ConfigError(f"{model_dir}: no .safetensors weights (other formats are not loaded)")
    tensors: dict[str, torch.Tensor] = {}
    for f in files:
        tensors.update(load_file(str(model_dir / f)))
    return tensors


def load_gptq_model(model_dir: str | Path, dtype: torch.dtype = torch.bfloat16, device: str = "cpu",
                    trust_remote_code: bool = False) -> nn.Module:
    """The checkpoint as a transformers model whose GPTQ layers are ``Int4PackedLinear``.

    ``device`` "cpu" or "cuda[:N]"; on CUDA the model computes in bf16 (the kernel's dtype).
    ``dtype`` is that of the unquantized weights and of the scales: bf16 by default, as the
    in-place backends keep them (GPTQ's fp16 scales lose 3 mantissa bits); float32 on the CPU
    reproduces the checkpoint exactly.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    if str(device).startswith("cuda"):
        if not int4pack.cuda_kernel_available():
            raise ConfigError(f"device: {device!r}, but CUDA or torch's CUDA int4 kernel is not available")
        dtype = torch.bfloat16
    elif device != "cpu":
        raise ConfigError(f"device: {device!r}; expected 'cpu' or 'cuda[:N]'")
    elif not int4pack.kernel_available():
        raise ConfigError("GPTQ loading needs PyTorch's CPU int4 kernel, which this torch build lacks")
    model_dir = Path(model_dir)
    qcfg = read_gptq_config(model_dir)
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # transformers' GPTQ integration needs gptqmodel; we convert
    with init_empty_weights():  # parameters on meta, buffers (rotary tables) real
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code)
    tensors = _read_tensors(model_dir)
    layers = sorted(k[: -len(".qweight")] for k in tensors if k.endswith(".qweight"))
    if not layers:
        raise ConfigError(f"{model_dir}: {QUANTIZE_CONFIG} is present but no tensor is GPTQ-packed (.qweight)")
    for name in layers:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if not isinstance(getattr(parent, child, None), nn.Linear):
            raise ConfigError(f"{model_dir}: {name} is GPTQ-packed but the model has no Linear there")
        new = gptq_to_int4pack(tensors.pop(f"{name}.qweight"), tensors.pop(f"{name}.qzeros"),
                               tensors.pop(f"{name}.scales"), tensors.pop(f"{name}.g_idx", None),
                               qcfg["group_size"], qcfg["checkpoint_format"],
                               bias=tensors.pop(f"{name}.bias", None), dtype=dtype, name=name,
                               device=device)
        setattr(parent, child, new)
    rest = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
    result = model.load_state_dict(rest, strict=False, assign=True)
    model.tie_weights()
    problems = []
    if result.unexpected_keys:
        problems.append(f"{model_dir}: tensors the model does not have: {result.unexpected_keys[:5]}")
    left = [n for n, p in model.named_parameters() if p.is_meta]
    if left:
        problems.append(f"{model_dir}: weights missing from the checkpoint: {left[:5]}")
    if problems:
        raise ConfigError(problems)
    return model.to(device).eval()
