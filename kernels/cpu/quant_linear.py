"""Weight-only int8 / int4 linear on the CPU: the C kernel in quant_linear.c, its packing, and the torch reference.

    int8 (per output channel, symmetric):  w[n, k] = q[n, k] * scale[n]                 q in [-127, 127]
    int4 (per group of input channels):    w[n, k] = q[n, k] * scale[g, n] + offset[g, n]   q in [0, 15]

`PackedWeight` holds the kernel's layout (see quant_linear.c); `dequantize` gives back the fp32 W [N, K] the
kernel computes with, which is what `quant_linear_ref` multiplies by.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass

import torch

from kernels.cpu import build

NB = 64  # output channels per packed block (quant_linear.c)


@dataclass(frozen=True)
class PackedWeight:
    packed: torch.Tensor  # uint8 [N_pad / 64, K, 64] (int8 bytes) or [N_pad / 64, K, 32] (int4 nibble pairs)
    scale: torch.Tensor  # fp32 [N_pad] (int8) or [K / group_size, N_pad] (int4)
    offset: torch.Tensor | None  # fp32 [K / group_size, N_pad] (int4)
    out_features: int
    in_features: int
    group_size: int  # int4 only (int8: in_features)
    bits: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scale, self.offset) if t is not None)


def quantize_int8(weight: torch.Tensor) -> PackedWeight:
    """Symmetric per-output-channel int8 of W [N, K] (round to nearest)."""
    weight = weight.detach().float()
    scale = weight.abs().amax(dim=1) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return pack_int8(q, scale)


def pack_int8(q: torch.Tensor, scale: torch.Tensor) -> PackedWeight:
    """q int8 [N, K], scale [N] -> the kernel's layout."""
    n, k = q.shape
    n_pad = -(-n // NB) * NB
    padded = torch.zeros(n_pad, k, dtype=torch.int8)
    padded[:n] = q
    packed = padded.view(n_pad // NB, NB, k).transpose(1, 2).contiguous().view(torch.uint8)
    scales = torch.zeros(n_pad)
    scales[:n] = scale.float()
    return PackedWeight(packed, scales, None, n, k, k, 8)


def pack_int4(q: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, group_size: int) -> PackedWeight:
    """q [N, K] integers in [0, 15], scale and offset [K / group_size, N] -> the kernel's layout."""
    n, k = q.shape
    if k % group_size or scale.shape != (k // group_size, n) or offset.shape != scale.shape:
        raise ValueError(f"int4 weight {n}x{k}: scale/offset must be [{k // group_size}, {n}] (group {group_size})")
    n_pad = -(-n // NB) * NB
    padded = torch.zeros(n_pad, k, dtype=torch.uint8)
    padded[:n] = q.to(torch.uint8)
    blocks = padded.view(n_pad // NB, NB, k).transpose(1, 2)  # [blocks, K, 64]
    packed = (blocks[..., : NB // 2] | (blocks[..., NB // 2 :] << 4)).contiguous()
    scales, offsets = torch.zeros(k // group_size, n_pad), torch.zeros(k // group_size, n_pad)
    scales[:, :n], offsets[:, :n] = scale.float(), offset.float()
    return PackedWeight(packed, scales, offsets, n, k, group_size, 4)


def dequantize(w: PackedWeight) -> torch.Tensor:
    """The fp32 W [N, K] the kernel multiplies by."""
    if w.bits == 8:
        q = w.packed.view(torch.int8).transpose(1, 2).reshape(-1, w.in_features).float()
        return (q * w.scale[:, None])[: w.out_features]
    q = torch.cat([w.packed & 0x0F, w.packed >> 4], dim=2).transpose(1, 2).reshape(-1, w.in_features).float()
    groups = torch.arange(w.in_features) // w.group_size
    # q * s + o rounded once, as the kernel's FMA: exact products, so the fp64 sum rounds to the same fp32
    out = q.double() * w.scale.t()[:, groups].double() + w.offset.t()[:, groups].double()
    return out.float()[: w.out_features]


def quant_linear_ref(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    out = x.float() @ dequantize(w).t()
    return out if bias is None else out + bias


def supports(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype == torch.float32 and build.load("quant_linear") is not None


def _kernel():
    return build.function("quant_linear", (ctypes.c_void_p,) * 6 + (ctypes.c_int64,) * 4 + (ctypes.c_int,))


def quant_linear(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x [..., K] fp32 -> [..., N] (check `supports` first); bias fp32 [N] or None."""
    assert x.shape[-1] == w.in_features and (bias is None or bias.dtype == torch.float32)
    flat = x.reshape(-1, w.in_features).contiguous()
    out = torch.empty(flat.shape[0], w.out_features)
    if flat.shape[0]:
        _kernel()(
            flat.data_ptr(),
            w.packed.data_ptr(),
            w.scale.data_ptr(),
            None if w.offset is None else w.offset.data_ptr(),
            None if bias is None else bias.contiguous().data_ptr(),
            out.data_ptr(),
            flat.shape[0],
            w.out_features,
            w.in_features,
            w.group_size,
            int(w.bits == 4),
        )
    return out.view(*x.shape[:-1], w.out_features)
