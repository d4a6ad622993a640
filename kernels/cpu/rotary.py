"""Rotary position embedding on the CPU: the C kernel in rotary.c, called through ctypes."""

from __future__ import annotations

import ctypes

import torch

from kernels.cpu import build


def supports(q: torch.Tensor) -> bool:
    return build.supports("rotary", q)


def _kernel():
    return build.function("rotary", (ctypes.c_void_p,) * 4 + (ctypes.c_int64,) * 9 + (ctypes.c_int,))


def apply_rotary(q, k, positions, cos_sin_cache):
    """q [T, Hq, D], k [T, Hkv, D], positions [T] -> (q, k) rotated IN PLACE, as kernels.rotary.apply_rotary.

    The values are those of kernels.rotary.apply_rotary_ref (bit for bit); unlike it, q and k themselves are
    overwritten, so they may be strided views (e.g. of a fused qkv projection) but need unit stride within a head.
    Positions must index rows of cos_sin_cache (fp32 [max_position, D], cos | sin): they are not bounds-checked.
    """
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    assert k.dtype == q.dtype and q.stride(-1) == 1 and k.stride(-1) == 1 and head_dim % 2 == 0
    assert cos_sin_cache.dtype == torch.float32 and cos_sin_cache.stride(-1) == 1
    assert cos_sin_cache.shape[-1] == head_dim and positions.shape == (num_tokens,)
    positions = positions.to(torch.int64).contiguous()
    if num_tokens:
        _kernel()(
            q.data_ptr(),
            k.data_ptr(),
            positions.data_ptr(),
            cos_sin_cache.data_ptr(),
            num_tokens,
            num_q_heads,
            num_kv_heads,
            head_dim,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            cos_sin_cache.stride(0),
            build.DTYPE_FLAGS[q.dtype],
        )
    return q, k
