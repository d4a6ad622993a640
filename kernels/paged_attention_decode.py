"""Decode attention over the paged KV cache: one query token per sequence (flash-decoding).

Sequence b's query sits at position context_lens[b] - 1 and attends to cache positions
0 .. context_lens[b] - 1, found through its block table:

    position p  ->  block_tables[b, p // block_size], offset p % block_size

Split-K: each (sequence, kv head) is cut into `num_splits` ranges of `split_len` positions so that a
small batch with long contexts still fills the GPU. Each split keeps a partial softmax in base 2
(running max m, denominator denom, unnormalised accumulator acc); a second kernel merges them:

    M = max_s m_s      out = sum_s 2^(m_s - M) acc_s / sum_s 2^(m_s - M) denom_s

One program handles all query heads that share a kv head (GQA/MQA), so K/V are read once per group.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.launch import dot_operands, num_sms

_LOG2E = 1.4426950408889634
_MIN_SPLIT_LEN = 256
_MAX_SPLITS = 32


@triton.jit
def _decode_split_kernel(
    q_ptr,
    k_cache_ptr,
    v_cache_ptr,
    block_tables_ptr,
    context_lens_ptr,
    out_ptr,
    part_acc_ptr,
    part_max_ptr,
    part_denom_ptr,
    qk_scale,
    stride_qb,
    stride_qh,
    stride_ob,
    stride_oh,
    stride_bt,
    stride_cb,
    stride_co,
    stride_ch,
    num_heads,
    block_size,
    queries_per_kv,
    head_dim,
    split_len,
    num_splits,
    SINGLE_SPLIT: tl.constexpr,
    BLOCK_G: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    seq = tl.program_id(0)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    context_len = tl.load(context_lens_ptr + seq)
    start = split * split_len
    end = tl.minimum(start + split_len, context_len)

    offs_g = tl.arange(0, BLOCK_G)
    offs_d = tl.arange(0, BLOCK_D)
    heads = kv_head * queries_per_kv + offs_g
    g_mask = offs_g < queries_per_kv
    d_mask = offs_d < head_dim
    q = tl.load(
        q_ptr + seq * stride_qb + heads[:, None] * stride_qh + offs_d[None, :],
        mask=g_mask[:, None] & d_mask[None, :],
        other=0.0,
    ).to(DOT_DTYPE)

    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    denom = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    block_table = block_tables_ptr + seq.to(tl.int64) * stride_bt
    for n0 in range(start, end, BLOCK_N):
        pos = n0 + tl.arange(0, BLOCK_N)
        n_mask = pos < end
        block = tl.load(block_table + pos // block_size, mask=n_mask, other=0).to(tl.int64)
        kv_offs = block * stride_cb + (pos % block_size) * stride_co + kv_head * stride_ch
        kv_offs = kv_offs[:, None] + offs_d[None, :]
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_cache_ptr + kv_offs, mask=kv_mask, other=0.0).to(DOT_DTYPE)
        s = tl.dot(q, tl.trans(k), input_precision=DOT_PRECISION) * qk_scale
        s = tl.where(n_mask[None, :], s, float("-inf"))
        m_new = tl.maximum(m, tl.max(s, 1))
        alpha = tl.exp2(m - m_new)
        p = tl.exp2(s - m_new[:, None])
        denom = denom * alpha + tl.sum(p, 1)
        v = tl.load(v_cache_ptr + kv_offs, mask=kv_mask, other=0.0).to(DOT_DTYPE)
        acc = acc * alpha[:, None] + tl.dot(p.to(DOT_DTYPE), v, input_precision=DOT_PRECISION)
        m = m_new

    if SINGLE_SPLIT:
        out_offs = seq * stride_ob + heads[:, None] * stride_oh + offs_d[None, :]
        tl.store(out_ptr + out_offs, acc / denom[:, None], mask=g_mask[:, None] & d_mask[None, :])
    else:
        # Partials are [batch, num_heads, num_splits(, head_dim)], contiguous.
        row = (seq * num_heads + heads) * num_splits + split
        tl.store(part_max_ptr + row, m, mask=g_mask)
        tl.store(part_denom_ptr + row, denom, mask=g_mask)
        acc_offs = row[:, None] * head_dim + offs_d[None, :]
        tl.store(part_acc_ptr + acc_offs, acc, mask=g_mask[:, None] & d_mask[None, :])


@triton.jit
def _decode_reduce_kernel(
    out_ptr,
    part_acc_ptr,
    part_max_ptr,
    part_denom_ptr,
    stride_ob,
    stride_oh,
    num_heads,
    head_dim,
    num_splits,
    BLOCK_S: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    seq = tl.program_id(0)
    head = tl.program_id(1)
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    s_mask = offs_s < num_splits
    row = (seq * num_heads + head) * num_splits + offs_s
    # Splits past the context hold m = -inf, denom = 0, acc = 0 and so get weight 0; split 0 is never empty.
    m = tl.load(part_max_ptr + row, mask=s_mask, other=float("-inf"))
    denom = tl.load(part_denom_ptr + row, mask=s_mask, other=0.0)
    mask = s_mask[:, None] & (offs_d[None, :] < head_dim)
    acc = tl.load(part_acc_ptr + row[:, None] * head_dim + offs_d[None, :], mask=mask, other=0.0)
    weight = tl.exp2(m - tl.max(m, 0))
    out = tl.sum(acc * weight[:, None], 0) / tl.sum(denom * weight, 0)
    tl.store(out_ptr + seq * stride_ob + head * stride_oh + offs_d, out, mask=offs_d < head_dim)


def _choose_num_splits(programs: int, max_len: int, device: torch.device) -> int:
    """Enough splits for ~2 waves of programs, but none shorter than _MIN_SPLIT_LEN positions."""
    wanted = triton.cdiv(2 * num_sms(device), programs)
    return max(1, min(wanted, triton.cdiv(max_len, _MIN_SPLIT_LEN), _MAX_SPLITS))


def paged_attention_decode(
    q, k_cache, v_cache, block_tables, context_lens, scale: float, num_splits: int | None = None
) -> torch.Tensor:
    """q [B, num_heads, head_dim] -> out [B, num_heads, head_dim] (dtype of q, fp32 accumulation)."""
    batch, num_heads, head_dim = q.shape
    _, block_size, num_kv_heads, _ = k_cache.shape
    assert num_heads % num_kv_heads == 0 and q.stride(-1) == 1
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(-1) == 1
    out = torch.empty_like(q)
    if batch == 0:
        return out
    # The table's width bounds every context without reading context_lens back from the GPU.
    max_len = block_tables.shape[1] * block_size
    block_n = 32 if head_dim > 128 else 64
    if num_splits is None:
        num_splits = _choose_num_splits(batch * num_kv_heads, max_len, q.device)
    split_len = triton.cdiv(triton.cdiv(max_len, num_splits), block_n) * block_n
    num_splits = triton.cdiv(max_len, split_len)

    queries_per_kv = num_heads // num_kv_heads
    part_max = torch.empty((batch, num_heads, num_splits), dtype=torch.float32, device=q.device)
    part_denom = torch.empty_like(part_max)
    part_acc = torch.empty((batch, num_heads, num_splits, head_dim), dtype=torch.float32, device=q.device)
    dot_dtype, dot_precision = dot_operands(q.dtype)
    block_d = triton.next_power_of_2(head_dim)
    _decode_split_kernel[(batch, num_kv_heads, num_splits)](
        q,
        k_cache,
        v_cache,
        block_tables,
        context_lens,
        out,
        part_acc,
        part_max,
        part_denom,
        scale * _LOG2E,
        q.stride(0),
        q.stride(1),
        out.stride(0),
        out.stride(1),
        block_tables.stride(0),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        num_heads,
        block_size,
        queries_per_kv,
        head_dim,
        split_len,
        num_splits,
        SINGLE_SPLIT=num_splits == 1,
        BLOCK_G=max(16, triton.next_power_of_2(queries_per_kv)),
        BLOCK_N=block_n,
        BLOCK_D=block_d,
        DOT_DTYPE=dot_dtype,
        DOT_PRECISION=dot_precision,
    )
    if num_splits > 1:
        _decode_reduce_kernel[(batch, num_heads)](
            out,
            part_acc,
            part_max,
            part_denom,
            out.stride(0),
            out.stride(1),
            num_heads,
            head_dim,
            num_splits,
            BLOCK_S=triton.next_power_of_2(num_splits),
            BLOCK_D=block_d,
        )
    return out


def _gather_kv(cache: torch.Tensor, block_tables: torch.Tensor, hidden_rows: torch.Tensor) -> torch.Tensor:
    """[num_blocks, block_size, H, D] through [B, nb] tables -> [B, H, nb * block_size, D].

    Slots past a context were never written and may hold NaN, which a -inf mask does not cancel
    (0 * NaN), so the gathered copy's rows `hidden_rows` (flat over B x positions) are zeroed.
    """
    batch = block_tables.shape[0]
    blocks = cache.index_select(0, block_tables.flatten().long())
    blocks.view(-1, cache.shape[2] * cache.shape[3]).index_fill_(0, hidden_rows, 0)
    return blocks.view(batch, -1, *cache.shape[2:]).transpose(1, 2)


def paged_attention_decode_ref(q, k_cache, v_cache, block_tables, context_lens, scale: float) -> torch.Tensor:
    """Gather the whole batch's K/V, mask by context length, one SDPA call for the batch."""
    batch, num_heads, head_dim = q.shape
    block_size, num_kv_heads = k_cache.shape[1], k_cache.shape[2]
    if batch == 0:
        return torch.empty_like(q)
    num_blocks = triton.cdiv(int(context_lens.max()), block_size)
    blocks_needed = (context_lens.long() + block_size - 1) // block_size
    in_use = torch.arange(num_blocks, device=q.device) < blocks_needed[:, None]
    # Entries past a sequence's blocks may be garbage: point them at block 0, then mask those positions.
    tables = torch.where(in_use, block_tables[:, :num_blocks], 0)
    visible = torch.arange(num_blocks * block_size, device=q.device) < context_lens[:, None]
    hidden_rows = (~visible).flatten().nonzero().squeeze(1)
    k = _gather_kv(k_cache, tables, hidden_rows)
    v = _gather_kv(v_cache, tables, hidden_rows)
    # A decode query's mask is the same for every head of a group, so the group's heads become
    # the query-length axis: [B, kv_heads, queries_per_kv, D] against [B, kv_heads, L, D].
    grouped_q = q.reshape(batch, num_kv_heads, num_heads // num_kv_heads, head_dim)
    out = F.scaled_dot_product_attention(grouped_q, k, v, attn_mask=visible[:, None, None, :], scale=scale)
    return out.reshape(batch, num_heads, head_dim)
