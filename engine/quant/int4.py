"""Asymmetric int4 quantization with one fp16 scale and zero point per group of input channels, as AutoAWQ.

    per row n and group j of `group_size` input channels:
        scale = (max - min) / 15  (rounded to fp16, as stored)    zero = clamp(-round(min / scale), 0, 15)
        q     = clamp(round(w / scale) + zero, 0, 15)              w ~ (q - zero) * scale

Weights are [out_features, in_features] as in Hugging Face checkpoints; `to_awq_tensors` transposes into the
AutoAWQ GEMM layout that kernels/awq_gemm.py reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kernels.awq_gemm import awq_pack

MAX_INT = 15


@dataclass(frozen=True)
class Int4Weight:
    intweight: torch.Tensor  # [N, K] int32 in 0..15
    zeros: torch.Tensor  # [N, K // group_size] int32 in 0..15
    scales: torch.Tensor  # [N, K // group_size] fp16

    @property
    def group_size(self) -> int:
        return self.intweight.shape[1] // self.scales.shape[1]

    def dequantize(self) -> torch.Tensor:
        """[N, K] fp32: (q - zero) * scale, exact in fp32."""
        g = self.group_size
        diff = (self.intweight - self.zeros.repeat_interleave(g, dim=1)).float()
        return diff * self.scales.float().repeat_interleave(g, dim=1)


def quantize_int4(weight: torch.Tensor, group_size: int) -> Int4Weight:
    n, k = weight.shape
    q, zeros, scales = _quantize_groups(weight, group_size)
    return Int4Weight(q.reshape(n, k).int(), zeros.int(), scales)


def fake_quantize(weight: torch.Tensor, group_size: int) -> torch.Tensor:
    """The fp32 weight that int4 serving actually multiplies with (quantize_int4(...).dequantize(), faster)."""
    q, zeros, scales = _quantize_groups(weight, group_size)
    return ((q - zeros[..., None]) * scales.float()[..., None]).reshape(weight.shape)


def _quantize_groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(q [N, G, g], zeros [N, G]) as whole floats, scales [N, G] fp16."""
    n, k = weight.shape
    assert k % group_size == 0, (k, group_size)
    groups = weight.float().reshape(n, k // group_size, group_size)
    w_max, w_min = groups.amax(-1), groups.amin(-1)
    scales = ((w_max - w_min).clamp(min=1e-5) / MAX_INT).half()
    step = scales.float()
    zeros = (-torch.round(w_min / step)).clamp_(0, MAX_INT)
    q = torch.round(groups / step[..., None]).add_(zeros[..., None]).clamp_(0, MAX_INT)
    return q, zeros, scales


def to_awq_tensors(q: Int4Weight) -> dict[str, torch.Tensor]:
    """qweight [K, N // 8] int32, qzeros [K // g, N // 8] int32, scales [K // g, N] fp16 (AutoAWQ GEMM)."""
    qweight, qzeros = awq_pack(q.intweight.t().contiguous(), q.zeros.t().contiguous())
    return {"qweight": qweight, "qzeros": qzeros, "scales": q.scales.t().contiguous()}


def choose_group_size(requested: int, in_features: list[int]) -> int:
    """`requested` if it divides every in_features, else the largest power of two <= requested that does."""
    if requested <= 0:
        raise ValueError("group size must be positive")
    if all(k % requested == 0 for k in in_features):
        return requested
    size = 1 << (requested.bit_length() - 1)
    while size > 1 and any(k % size for k in in_features):
        size //= 2
    if size < 8:
        raise ValueError(f"no group size of at least 8 divides every in_features {sorted(set(in_features))}")
    return size
