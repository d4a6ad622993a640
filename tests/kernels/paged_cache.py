"""Random paged KV caches for the attention tests, kept beside the dense K/V they were built from."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True, slots=True)
class PagedKV:
    k_cache: torch.Tensor  # [num_blocks, block_size, num_kv_heads, head_dim]
    v_cache: torch.Tensor
    block_tables: torch.Tensor  # [num_seqs, max_blocks] int32, tails filled with out-of-range garbage
    context_lens: torch.Tensor  # [num_seqs] int32
    keys: list[torch.Tensor]  # per sequence, dense [context_len, num_kv_heads, head_dim]
    values: list[torch.Tensor]


def make_paged_kv(
    context_lens: list[int],
    num_kv_heads: int,
    head_dim: int,
    block_size: int,
    dtype: torch.dtype,
    device: torch.device,
    gen: torch.Generator,
) -> PagedKV:
    """Blocks handed out in shuffled order; every slot no sequence owns holds NaN, so any read of
    one (an unmasked load, a garbage table entry) poisons the result."""
    blocks_per_seq = [-(-n // block_size) for n in context_lens]
    num_blocks = sum(blocks_per_seq) + 3
    max_blocks = max(blocks_per_seq) + 2
    shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.full(shape, float("nan"), dtype=dtype)
    v_cache = torch.full(shape, float("nan"), dtype=dtype)
    order = torch.randperm(num_blocks, generator=gen)
    block_tables = torch.randint(num_blocks, 10**6, (len(context_lens), max_blocks), generator=gen)
    keys, values = [], []
    used = 0
    for seq, (context_len, n) in enumerate(zip(context_lens, blocks_per_seq, strict=True)):
        blocks = order[used : used + n]
        used += n
        block_tables[seq, :n] = blocks
        k = torch.randn(context_len, num_kv_heads, head_dim, generator=gen).to(dtype)
        v = torch.randn(context_len, num_kv_heads, head_dim, generator=gen).to(dtype)
        for i, block in enumerate(blocks.tolist()):
            rows = slice(i * block_size, min((i + 1) * block_size, context_len))
            k_cache[block, : rows.stop - rows.start] = k[rows]
            v_cache[block, : rows.stop - rows.start] = v[rows]
        keys.append(k.to(device))
        values.append(v.to(device))
    return PagedKV(
        k_cache.to(device),
        v_cache.to(device),
        block_tables.to(device=device, dtype=torch.int32),
        torch.tensor(context_lens, dtype=torch.int32, device=device),
        keys,
        values,
    )


def dense_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_positions: torch.Tensor, scale: float
):
    """Obviously-correct float64 attention of q [Q, H, D] over one sequence's dense k/v [L, Hkv, D];
    query i sees key positions 0 .. q_positions[i]."""
    group = q.shape[1] // k.shape[1]
    k = k.double().repeat_interleave(group, dim=1)
    v = v.double().repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.double(), k) * scale
    visible = torch.arange(k.shape[0], device=q.device)[None, :] <= q_positions[:, None]
    scores = scores.masked_fill(~visible, float("-inf"))
    return torch.einsum("hqk,khd->qhd", scores.softmax(-1), v)
