"""Paged decode attention on the CPU: the C kernel in paged_attention_decode.c, called through ctypes."""

from __future__ import annotations

import ctypes

import torch

from kernels.cpu import build


def supports(q: torch.Tensor) -> bool:
    return build.supports("paged_attention_decode", q)


def _kernel():
    return build.function(
        "paged_attention_decode",
        (ctypes.c_void_p,) * 6 + (ctypes.c_int64,) * 6 + (ctypes.c_float, ctypes.c_int),
    )


def paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale: float) -> torch.Tensor:
    """Same contract as kernels.paged_attention_decode.paged_attention_decode_ref (check `supports` first)."""
    batch, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    q, block_tables, context_lens = q.contiguous(), block_tables.contiguous(), context_lens.contiguous()
    assert k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.dtype == q.dtype
    assert block_tables.dtype == context_lens.dtype == torch.int32 and block_size & (block_size - 1) == 0
    out = torch.empty_like(q)
    if batch:
        _kernel()(
            *(t.data_ptr() for t in (q, k_cache, v_cache, block_tables, context_lens, out)),
            *(batch, num_heads, num_kv_heads, head_dim, block_size, block_tables.shape[1]),
            scale,
            build.DTYPE_FLAGS[q.dtype],
        )
    return out
