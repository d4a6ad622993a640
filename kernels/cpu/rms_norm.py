"""RMSNorm (optionally fused with the residual add) on the CPU: the C kernel in rms_norm.c, called through ctypes."""

from __future__ import annotations

import ctypes

import torch

from kernels.cpu import build


def supports(x: torch.Tensor) -> bool:
    return build.supports("rms_norm", x)


def _kernel():
    return build.function(
        "rms_norm",
        (ctypes.c_void_p,) * 5 + (ctypes.c_int64,) * 2 + (ctypes.c_float, ctypes.c_int, ctypes.c_int),
    )


def rms_norm(x, weight, eps: float, residual=None):
    """Same contract as kernels.rms_norm.rms_norm_ref (check `supports` first): x [..., H] -> normed x, or with a
    residual -> (normed(x + residual), x + residual), all new tensors; weight [H] fp32 or bf16."""
    hidden = x.shape[-1]
    assert weight.shape == (hidden,) and weight.dtype in build.DTYPE_FLAGS and weight.device == x.device
    assert residual is None or (residual.shape == x.shape and residual.dtype == x.dtype)
    x, weight = x.contiguous(), weight.contiguous()
    out = torch.empty_like(x, dtype=torch.promote_types(x.dtype, weight.dtype))
    summed = None if residual is None else torch.empty_like(x)
    if residual is not None:
        residual = residual.contiguous()
    if x.numel():
        _kernel()(
            x.data_ptr(),
            None if residual is None else residual.data_ptr(),
            weight.data_ptr(),
            out.data_ptr(),
            None if summed is None else summed.data_ptr(),
            x.numel() // hidden,
            hidden,
            eps,
            build.DTYPE_FLAGS[x.dtype],
            build.DTYPE_FLAGS[weight.dtype],
        )
    return out if residual is None else (out, summed)
