"""Prefill / extend attention over the paged KV cache, for ragged chunks of several sequences.

The chunk's own K/V are already in the cache, so every query reads keys only through the block table.
Sequence s owns queries query_start_loc[s] .. query_start_loc[s+1] - 1 (q_len of them); with
context_len = context_lens[s] tokens cached including the chunk:

    cache:  | cached prefix (context_len - q_len) | chunk (q_len) |
    query i sits at position context_len - q_len + i and sees positions 0 .. that position

which covers a plain prompt (empty prefix), a prefix-cache hit and a later chunk of a chunked prefill.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.launch import dot_operands

_LOG2E = 1.4426950408889634


@triton.jit
def _prefill_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    query_start_loc_ptr,
    context_lens_ptr,
    out_ptr,
    qk_scale,
    stride_qt,
    stride_qh,
    stride_ot,
    stride_oh,
    stride_bt,
    stride_cb,
    stride_co,
    stride_ch,
    block_size,
    queries_per_kv,
    head_dim,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    tile = tl.program_id(2)
    q_start = tl.load(query_start_loc_ptr + seq)
    q_len = tl.load(query_start_loc_ptr + seq + 1) - q_start
    if tile * BLOCK_M >= q_len:
        return
    context_len = tl.load(context_lens_ptr + seq)
    prefix_len = context_len - q_len
    kv_head = head // queries_per_kv

    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    d_mask = offs_d < head_dim
    q_mask = (offs_m < q_len)[:, None] & d_mask[None, :]
    tokens = (q_start + offs_m).to(tl.int64)
    q = tl.load(
        q_ptr + tokens[:, None] * stride_qt + head * stride_qh + offs_d[None, :], mask=q_mask, other=0.0
    )
    q = q.to(DOT_DTYPE)
    # Padding rows past q_len sit at positions >= context_len; they still see position 0, so no row is
    # ever fully masked and the softmax stays finite.
    q_pos = prefix_len + offs_m

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)
    denom = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
    block_table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    kv_end = tl.minimum(prefix_len + (tile + 1) * BLOCK_M, context_len)
    for n0 in range(0, kv_end, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        n_mask = pos < kv_end
        block = tl.load(block_table + pos // block_size, mask=n_mask, other=0).to(tl.int64)
        kv_offs = block * stride_cb + (pos % block_size) * stride_co + kv_head * stride_ch
        kv_offs = kv_offs[:, None] + offs_d[None, :]
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_cache_ptr + kv_offs, mask=kv_mask, other=0.0).to(DOT_DTYPE)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        visible = (pos[None, :] <= q_pos[:, None]) & n_mask[None, :]
        s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + kv_offs, mask=kv_mask, other=0.0).to(DOT_DTYPE)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v, input_precision=DOT_PRECISION)
        m = m_new

    out_offs = tokens[:, None] * stride_ot + head * stride_oh + offs_d[None, :]
    tl.store(out_ptr + out_offs, acc / denom[:, None], mask=q_mask)


def paged_attention_prefill(
    q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale: float, max_query_len: int
) -> torch.Tensor:
    """q [T, num_heads, head_dim] ragged over S sequences -> out [T, num_heads, head_dim]."""
    num_tokens, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    assert num_heads % num_kv_heads == 0 and q.stride(-1) == 1
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
    out = torch.empty_like(q)
    num_seqs = context_lens.numel()
    if num_tokens == 0 or num_seqs == 0:
        return out
    block_m = 16 if max_query_len <= 16 else 64
    # Narrower key tiles for wide heads and fp32 keep shared memory under consumer GPUs' ~99 KiB.
    block_n = 32 if head_dim > 128 or q.dtype == torch.float32 else 64
    dot_dtype, dot_precision = dot_operands(q.dtype)
    _prefill_kernel[(num_seqs, num_heads, triton.cdiv(max_query_len, block_m))](
        q,
        k_cache,
        v_cache,
        block_tables,
        query_start_loc,
        context_lens,
        out,
        scale * _LOG2E,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        block_tables.stride(0),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        block_size,
        num_heads // num_kv_heads,
        head_dim,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_D=triton.next_power_of_2(head_dim),
        DOT_DTYPE=dot_dtype,
        DOT_PRECISION=dot_precision,
    )
    return out


def _sequence_kv(cache: torch.Tensor, block_table: torch.Tensor, context_len: int) -> torch.Tensor:
    """One sequence's cached positions 0 .. context_len - 1 as [num_kv_heads, context_len, head_dim]."""
    num_blocks = triton.cdiv(context_len, cache.shape[1])
    blocks = cache.index_select(0, block_table[:num_blocks].long())
    return blocks.flatten(0, 1)[:context_len].transpose(0, 1)


def paged_attention_prefill_ref(
    q, k_cache, v_cache, block_tables, query_start_loc, context_lens, scale: float, max_query_len: int
) -> torch.Tensor:
    """One SDPA call per sequence (a step holds few prefills), with the prefix-aware causal mask."""
    out = torch.empty_like(q)
    starts = query_start_loc.tolist()
    for seq, context_len in enumerate(context_lens.tolist()):
        q_start, q_end = starts[seq], starts[seq + 1]
        q_len = q_end - q_start
        if q_len == 0:
            continue
        k = _sequence_kv(k_cache, block_tables[seq], context_len)
        v = _sequence_kv(v_cache, block_tables[seq], context_len)
        prefix_len = context_len - q_len
        positions = torch.arange(context_len, device=q.device)
        visible = positions[None, :] <= positions[prefix_len:, None]
        # 4-D inputs: with 3-D ones, CPU SDPA drops to its unfused math path (~4x slower on long prompts).
        out[q_start:q_end] = F.scaled_dot_product_attention(
            q[q_start:q_end].transpose(0, 1)[None],
            k[None],
            v[None],
            attn_mask=visible[None, None],
            scale=scale,
            enable_gqa=True,
        )[0].transpose(0, 1)
    return out
