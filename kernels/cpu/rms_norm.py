"""RMSNorm (optionally fused with the residual add) on the CPU: the C kernel in rms_norm.c, called through ctypes."""

from __future__ import annotations

import ctypes
import functools

import torch

from kernels.cpu.build import load

_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def supports(x: torch.Tensor) -> bool:
    return x.device.type == "cpu" and x.dtype in _DTYPES and load("rms_norm") is not None


@functools.cache
def _kernel():
    fn = load("rms_norm").rms_norm
    fn.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int64] * 2 + [ctypes.c_float, ctypes.c_int, ctypes.c_int]
    fn.restype = None
    return fn


def rms_norm(x, weight, eps: float, residual=None):
    """Same contract as kernels.rms_norm.rms_norm_ref (check `supports` first): x [..., H] -> normed x, or with a
    residual -> (normed(x + residual), x + residual), all new tensors; weight [H] fp32 or bf16."""
    hidden = x.shape[-1]
    assert weight.shape == (hidden,) and weight.dtype in _DTYPES and weight.device == x.device
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
            _DTYPES[x.dtype],
            _DTYPES[weight.dtype],
        )
    return out if residual is None else (out, summed)
