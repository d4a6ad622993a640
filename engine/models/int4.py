"""The linear layer of our int4 variant of a bundled GGUF model (engine/quant/gguf_int4.py): Q4_1 blocks.

    qweight [N, K // 2] uint8 (two columns per byte)    scales, offsets [N, K // 32] fp16    w = q * d + m

Fused layers stack their shards along N (dim 0 of every tensor). After loading, the weight is repacked for
the CPU int4 kernel (kernels/cpu/quant_linear.c), which multiplies by exactly the fp32 conversion's weights.
"""

from __future__ import annotations

import torch
from torch import nn

from kernels.cpu import quant_linear as cpu_quant_linear


def quantized_linear(x: torch.Tensor, weight: cpu_quant_linear.PackedWeight, bias: torch.Tensor | None):
    """The C kernel where it builds (fp32 on CPU), else its torch reference."""
    op = cpu_quant_linear.quant_linear if cpu_quant_linear.supports(x) else cpu_quant_linear.quant_linear_ref
    return op(x, weight, bias)


class GGUFInt4Linear(nn.Module):
    fuse_dims = {"qweight": 0, "scales": 0, "offsets": 0}  # noqa: RUF012 - read-only class constant

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, group_size: int = 32):
        super().__init__()
        if bias or in_features % group_size or in_features % 2:
            raise ValueError(f"GGUF int4 linear {in_features} -> {out_features}: no bias, K a multiple of {group_size}")
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups = in_features // group_size
        self.qweight = _frozen(torch.empty(out_features, in_features // 2, dtype=torch.uint8))
        self.scales = _frozen(torch.empty(out_features, groups, dtype=torch.float16))
        self.offsets = _frozen(torch.empty(out_features, groups, dtype=torch.float16))
        self.dtype = torch.get_default_dtype()  # the model's: the loader builds the model under it
        self.packed: cpu_quant_linear.PackedWeight | None = None

    def process_weights_after_loading(self) -> None:
        if self.qweight.device.type != "cpu" or self.dtype != torch.float32:
            raise ValueError("the int4 variant runs on the CPU in float32")
        q = torch.stack([self.qweight & 0x0F, self.qweight >> 4], dim=-1).view(self.out_features, -1)
        self.packed = cpu_quant_linear.pack_int4(
            q, self.scales.float().t(), self.offsets.float().t(), self.group_size
        )
        # the packed copy is what runs: drop the checkpoint layout (half the int4 bytes again)
        self.qweight = self.scales = self.offsets = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return quantized_linear(x, self.packed, None)


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)
