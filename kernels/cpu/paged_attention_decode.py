"""Paged decode attention on the CPU: the C kernel in paged_attention_decode.c, called through ctypes."""

from __future__ import annotations

import ctypes

import torch

from kernels.cpu.build import load

_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def supports(q: torch.Tensor) -> bool:
    return q.device.type == "cpu" and q.dtype in _DTYPES and load("paged_attention_decode") is not None


def paged_attention_decode(q, k_cache, v_cache, block_tables, context_lens, scale: float) -> torch.Tensor:
    """Same contract as kernels.paged_attention_decode.paged_attention_decode_ref (check `supports` first)."""
    batch, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    q, block_tables, context_lens = q.contiguous(), block_tables.contiguous(), context_lens.contiguous()
    assert k_cache.is_contiguous() and v_cache.is_contiguous() and k_cache.dtype == q.dtype
    assert block_tables.dtype == context_lens.dtype == torch.int32 and block_size & (block_size - 1) == 0
    out = torch.empty_like(q)
    load("paged_attention_decode").paged_attention_decode(
        *(ctypes.c_void_p(t.data_ptr()) for t in (q, k_cache, v_cache, block_tables, context_lens, out)),
        *(
            ctypes.c_int64(n)
            for n in (batch, num_heads, num_kv_heads, head_dim, block_size, block_tables.shape[1])
        ),
        ctypes.c_float(scale),
        ctypes.c_int(_DTYPES[q.dtype]),
    )
    return out
