"""Packed int4 weight-only linear layer for CPU, on PyTorch's own int4 kernel.

torchao 0.18 has no CPU int4 layout that runs with the CPU build of torch 2.13: its
``Int4WeightOnlyConfig`` formats need the ``mslk`` package (plain, preshuffled), CUDA
(tile_packed_to_4d) or XPU (plain_int32), and the packed ``IntxWeightOnlyConfig`` formats
need torchao's optional C++ kernels; the one that runs (``unpacked_to_int8``) stores one
int4 value per *byte*, so it saves no memory over int8. PyTorch itself ships the CPU int4
kernel that torchao's earlier ``Int4CPULayout`` used: ``aten._convert_weight_to_int4pack_for_cpu``
(two 4-bit values per byte) and ``aten._weight_int4pack_mm_for_cpu``. This module wraps it.

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


def can_pack(linear: nn.Linear, group_size: int) -> bool:
    """The kernel needs whole groups along the input dimension and an even row length."""
    return linear.in_features % group_size == 0 and linear.in_features % 2 == 0


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
    """A ``nn.Linear`` replacement holding 4-bit packed weights (CPU kernel)."""

    def __init__(self, in_features: int, out_features: int, group_size: int,
                 dtype: torch.dtype = torch.bfloat16, bias: bool = False):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.group_size = group_size
        self.register_buffer("packed_weight", torch.empty(out_features, in_features // 2, dtype=torch.uint8))
        self.register_buffer("scales_and_zeros", torch.empty(in_features // group_size, out_features, 2, dtype=dtype))
        self.bias = nn.Parameter(torch.empty(out_features, dtype=dtype), requires_grad=False) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = DEFAULT_GROUP_SIZE) -> "Int4PackedLinear":
        if not can_pack(linear, group_size):
            raise ValueError(f"in_features={linear.in_features} is not a multiple of group_size={group_size}")
        dtype = linear.weight.dtype if linear.weight.dtype in (torch.bfloat16, torch.float16, torch.float32) else torch.bfloat16
        mod = cls(linear.in_features, linear.out_features, group_size, dtype, bias=linear.bias is not None)
        q, scale, zero = quantize_groupwise(linear.weight, group_size)
        mod.packed_weight = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.contiguous(), 1)
        mod.scales_and_zeros = torch.stack([scale.t(), zero.t()], dim=-1).to(dtype).contiguous()
        if linear.bias is not None:
            mod.bias.data.copy_(linear.bias.detach().to(dtype))
        return mod

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise RuntimeError("Int4PackedLinear runs on CPU only (use the torchao or bitsandbytes "
                               "int4 backends on CUDA)")
        shape = x.shape
        x2 = x.reshape(-1, self.in_features).to(self.scales_and_zeros.dtype)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, self.packed_weight, self.group_size,
                                                       self.scales_and_zeros)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def dequantize(self) -> torch.Tensor:
        """The [out, in] weight this layer computes with (for checks and debugging)."""
        eye = torch.eye(self.in_features, dtype=self.scales_and_zeros.dtype)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            eye, self.packed_weight, self.group_size, self.scales_and_zeros).t().contiguous()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bits=4, group_size={self.group_size}, bias={self.bias is not None}")
