"""Weight-only int8 / int4 linear on the CPU: the C kernel in quant_linear.c, its packing, and the torch reference.

    int8 (symmetric):   w[n, k] = q[n, k] * scale[g, n]                  q in [-127, 127]
    int4 (asymmetric):  w[n, k] = q[n, k] * scale[g, n] + offset[g, n]   q in [0, 15]

with g = k // group_size: one scale (and offset) per output channel and group of input channels (int8 per
channel is group_size = K). int8 of a row group is llama.cpp's Q8_0 rule (scale = max|w| / 127), so Q8_0
weights (the bundled model's embedding) quantize back to themselves with group_size 32.

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
    scale: torch.Tensor  # fp32 [K / group_size, N_pad]
    offset: torch.Tensor | None  # fp32 [K / group_size, N_pad] (int4)
    out_features: int
    in_features: int
    group_size: int
    bits: int

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.packed, self.scale, self.offset) if t is not None)


def quantize_int8(weight: torch.Tensor, group_size: int | None = None) -> PackedWeight:
    """Symmetric int8 of W [N, K] per output channel and group of input channels (None: one group), round to
    nearest. A group size that does not divide K falls back to one group."""
    weight = weight.detach().float()
    n, k = weight.shape
    group_size = group_size if group_size and k % group_size == 0 else k
    groups = weight.view(n, k // group_size, group_size)
    scale = groups.abs().amax(dim=2) / 127.0  # [N, G]
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(groups / scale[..., None]).clamp_(-127, 127).to(torch.int8).view(n, k)
    return pack_int8(q, scale.t(), group_size)


def pack_int8(q: torch.Tensor, scale: torch.Tensor, group_size: int) -> PackedWeight:
    """q int8 [N, K], scale [K / group_size, N] -> the kernel's layout."""
    n, k = q.shape
    n_pad = -(-n // NB) * NB
    padded = torch.zeros(n_pad, k, dtype=torch.int8)
    padded[:n] = q
    packed = padded.view(n_pad // NB, NB, k).transpose(1, 2).contiguous().view(torch.uint8)
    scales = torch.zeros(k // group_size, n_pad)
    scales[:, :n] = scale.float()
    return PackedWeight(packed, scales, None, n, k, group_size, 8)


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
    groups = torch.arange(w.in_features) // w.group_size
    if w.bits == 8:
        q = w.packed.view(torch.int8).transpose(1, 2).reshape(-1, w.in_features).float()
        return (q * w.scale.t()[:, groups])[: w.out_features]
    q = torch.cat([w.packed & 0x0F, w.packed >> 4], dim=2).transpose(1, 2).reshape(-1, w.in_features).float()
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
