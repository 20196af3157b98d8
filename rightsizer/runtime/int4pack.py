"""Packed int4 weight-only linear layer for CPU, on PyTorch's own int4 kernel.

torchao 0.18 has no CPU int4 layout that runs with the CPU build of torch 2.13: its
``Int4WeightOnlyConfig`` formats need the ``mslk`` package (plain, preshuffled), CUDA
(tile_packed_to_4d) or XPU (plain_int32), and the packed ``IntxWeightOnlyConfig`` formats
need torchao's optional C++ kernels; the one that runs (``unpacked_to_int8``) stores one
int4 value per *byte*, so it saves no memory over int8. PyTorch itself ships the CPU int4
kernel that torchao's earlier ``Int4CPULayout`` used: ``aten._convert_weight_to_int4pack_for_cpu``
(two 4-bit values per byte) and ``aten._weight_int4pack_mm_for_cpu``. This module wraps it.

The same layer runs on CUDA through ``aten._convert_weight_to_int4pack`` and
``aten._weight_int4pack_mm`` (tinygemm, bf16 only), so a GPTQ checkpoint converted by
``gptq_format`` serves on either device; the packed layouts differ, so a layer is packed
for one device and refuses inputs from the other.

Quantization is asymmetric round-to-nearest per group of ``group_size`` input features, in
the tinygemm convention: ``w ~= (q - 8) * scale + zero`` with ``q`` in [0, 15].
Stored bytes per weight: 0.5 (packed values) + 4 / group_size (a 16-bit scale and zero per
group), e.g. 0.5625 at group 64 (28% of bf16).
"""

from __future__ import annotations

import torch
from torch import nn

DEFAULT_GROUP_SIZE = 64


def kernel_available() -> bool:
    """Whether this torch build has the CPU int4 pack and matmul ops."""
    ops = torch.ops.aten
    return hasattr(ops, "_convert_weight_to_int4pack_for_cpu") and hasattr(ops, "_weight_int4pack_mm_for_cpu")


def cuda_kernel_available() -> bool:
    ops = torch.ops.aten
    return (torch.cuda.is_available() and hasattr(ops, "_convert_weight_to_int4pack")
            and hasattr(ops, "_weight_int4pack_mm"))


def inner_k_tiles(in_features: int) -> int:
    """tinygemm's inner K tiling (8, 4 or 2): the largest that divides ``in_features`` / 16."""
    for tiles in (8, 4, 2):
        if in_features % (tiles * 16) == 0:
            return tiles
    raise ValueError(f"in_features={in_features} is not a multiple of 32 (CUDA int4 kernel)")


def pack_problem(linear: nn.Linear, group_size: int, device_type: str = "cpu") -> str | None:
    """Why the kernel cannot take this layer (None when it can): it needs whole groups along
    the input dimension, an even row length, and on the CPU rows in multiples of 16 (on CUDA,
    of 8). Real checkpoints have such layers (Phi-3's fused gate_up, a head over an odd
    vocabulary); the quantizer keeps them at the next precision up."""
    k, n = linear.in_features, linear.out_features
    if k % group_size or k % 2:
        return f"in_features {k} is not a multiple of the group size {group_size}"
    tile = 8 if device_type == "cuda" else 16
    if n % tile:
        return f"out_features {n} is not a multiple of {tile} ({'CUDA' if tile == 8 else 'CPU'} int4 kernel)"
    return None


def can_pack(linear: nn.Linear, group_size: int, device_type: str = "cpu") -> bool:
    """Whether the kernel takes this layer (:func:`pack_problem`)."""
    return pack_problem(linear, group_size, device_type) is None


def quantize_groupwise(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q int32 [N, K] in 0..15, scale [N, K/G], zero [N, K/G]) for an [N, K] weight."""
    n, k = weight.shape
    w = weight.detach().float().reshape(n, k // group_size, group_size)
    w_min = w.amin(dim=-1, keepdim=True)
    w_max = w.amax(dim=-1, keepdim=True)
    scale = ((w_max - w_min) / 15.0).clamp(min=1e-8)
    q = ((w - w_min) / scale).round().clamp(0, 15).to(torch.int32)
    zero = w_min + 8.0 * scale
    return q.reshape(n, k), scale.reshape(n, -1), zero.reshape(n, -1)


class Int4PackedLinear(nn.Module):
    """A ``nn.Linear`` replacement holding 4-bit packed weights (CPU or CUDA kernel)."""

    def __init__(self, in_features: int, out_features: int, group_size: int,
                 dtype: torch.dtype = torch.bfloat16, bias: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.register_buffer("packed_weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // group_size, out_features, 2, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None
        # GPTQ checkpoints may group input features out of order (act-order): the kernel needs
        # contiguous groups, so the inputs are permuted into group order first.
        self.register_buffer("perm", None)
        self.device_type = "cpu"  # the layout packed_weight is in: "cpu" or "cuda"

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = DEFAULT_GROUP_SIZE) -> "Int4PackedLinear":
        if not can_pack(linear, group_size):
            raise ValueError(f"in_features={linear.in_features} is not a multiple of group_size={group_size}")
        dtype = linear.weight.dtype if linear.weight.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16
        q, scale, zero = quantize_groupwise(linear.weight, group_size)
        bias = linear.bias.detach() if linear.bias is not None else None
        return cls.from_quantized(q, scale, zero, group_size, dtype=dtype, bias=bias)

    @classmethod
    def from_quantized(cls, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, group_size: int,
                       dtype: torch.dtype = torch.bfloat16, bias: torch.Tensor | None = None,
                       perm: torch.Tensor | None = None, device: str | torch.device = "cpu") -> "Int4PackedLinear":
        """Pack already-quantized weights: ``q`` int [N, K] in 0..15, ``scale``/``zero`` [N, K/G].

        The layer computes ``w = (q - 8) * scale + zero``; ``perm`` (a permutation of the K
        input features) is applied to the inputs first, for groups that are not contiguous.
        ``device="cuda"`` packs for the CUDA kernel (bf16).
        """
        n, k = q.shape
        if k % group_size or k % 2 or scale.shape != (n, k // group_size) or zero.shape != scale.shape:
            raise ValueError(f"quantized weight [{n}, {k}] with scales {tuple(scale.shape)} and zeros "
                             f"{tuple(zero.shape)} do not form groups of {group_size}")
        if int(q.min()) < 0 or int(q.max()) > 15:
            raise ValueError("quantized weight values must lie in 0..15")
        device = torch.device(device)
        if device.type == "cuda":
            if group_size not in (32, 64, 128, 256) or n % 8:
                raise ValueError(f"CUDA int4 kernel: group_size {group_size} must be 32/64/128/256 and "
                                 f"out_features {n} a multiple of 8")
            dtype = torch.bfloat16  # tinygemm computes in bf16 only
        elif n % 16:
            raise ValueError(f"CPU int4 kernel: out_features {n} must be a multiple of 16")
        mod = cls(k, n, group_size, dtype, bias=bias is not None)
        if device.type == "cuda":
            q8 = q.to(device=device, dtype=torch.int32)
            pairs = ((q8[:, ::2] << 4) | q8[:, 1::2]).to(torch.uint8).contiguous()
            mod.packed_weight = torch.ops.aten._convert_weight_to_int4pack(pairs, inner_k_tiles(k))
            mod.device_type = "cuda"
        else:
            mod.packed_weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.to(torch.int32).contiguous(), 1)
        mod.scales_and_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(device=device, dtype=dtype).contiguous()
        if bias is not None:
            mod.bias.data = bias.to(device=device, dtype=dtype)
        if perm is not None:
            mod.perm = perm.to(device=device, dtype=torch.long).contiguous()
        return mod

    def _mm(self, x2: torch.Tensor) -> torch.Tensor:
        if self.device_type == "cuda":
            return torch.ops.aten._weight_int4pack_mm(x2, self.packed_weight, self.group_size,
                                                      self.scales_and_zeros)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed_weight, self.group_size,
                                                          self.scales_and_zeros)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != self.device_type:
            raise RuntimeError(f"Int4PackedLinear was packed for {self.device_type} and got a {x.device.type} "
                               "input; the packed layouts differ, so pack it again for that device")
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(self.scales_and_zeros.dtype).contiguous()  # a sliced input stays a strided view
        if self.perm is not None:
            x2 = x2.index_select(1, self.perm)
        y = self._mm(x2)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        """The [out, in] weight this layer computes with (for checks and debugging)."""
        eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype, device=self.scales_and_zeros.device)
        w = self._mm(eye).t()
        if self.perm is not None:  # back to the original input order
            w = torch.empty_like(w).index_copy_(1, self.perm, w)
        return w.contiguous()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits=4, group_size={self.group_size}, bias={self.bias is not None}")
