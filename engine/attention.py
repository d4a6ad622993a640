"""Paged attention over a mixed batch: decode tokens first, then prefill (or extend) chunks.

Token layout of one step (T tokens in all), as built by the model runner:

    | decode seq 0 | decode seq 1 | ... | prefill seq 0 chunk ... | prefill seq 1 chunk ... |
    |<------ num_decode_tokens ------->|<------------ T - num_decode_tokens ------------->|

New K/V are scattered into the cache first (slot_mapping), so every query attends through the block
table only. On CUDA the Triton kernels run; on CPU the C decode kernel (kernels.cpu) where it builds, else the
torch references (see engine.kernel_path).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.kernel_path import pick, use_triton
from kernels import kv_write, paged_attention_decode, paged_attention_prefill
from kernels.cpu import paged_attention_decode as cpu_decode


@dataclass(slots=True)
class AttentionMetadata:
    slot_mapping: torch.Tensor  # [T] int64, cache slot (block * block_size + offset) of each new token
    num_decode_tokens: int  # one per decoding sequence, at the front
    decode_block_tables: torch.Tensor  # [num_decodes, max_blocks] int32
    decode_context_lens: torch.Tensor  # [num_decodes] int32, tokens in cache incl. the new one
    prefill_block_tables: torch.Tensor  # [num_prefills, max_blocks] int32
    prefill_query_start_loc: torch.Tensor  # [num_prefills + 1] int32, offsets into the prefill part
    prefill_context_lens: torch.Tensor  # [num_prefills] int32, tokens in cache incl. this chunk
    max_prefill_query_len: int

    @property
    def num_prefills(self) -> int:
        return self.prefill_context_lens.numel()


def write_kv(key, value, k_cache, v_cache, meta: AttentionMetadata) -> None:
    op = kv_write.write_kv if use_triton(key) else kv_write.write_kv_ref
    op(key, value, k_cache, v_cache, meta.slot_mapping)


def paged_attention(q, k_cache, v_cache, meta: AttentionMetadata, scale: float) -> torch.Tensor:
    """q: [T, num_heads, head_dim] -> [T, num_heads, head_dim]."""
    out = torch.empty_like(q)
    nd = meta.num_decode_tokens
    if nd:
        op = pick(
            q,
            triton=paged_attention_decode.paged_attention_decode,
            cpu=cpu_decode,
            name="paged_attention_decode",
            reference=paged_attention_decode.paged_attention_decode_ref,
        )
        out[:nd] = op(q[:nd], k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, scale)
    if meta.num_prefills:
        op = paged_attention_prefill.paged_attention_prefill
        if not use_triton(q):
            op = paged_attention_prefill.paged_attention_prefill_ref
        out[nd:] = op(
            q[nd:],
            k_cache,
            v_cache,
            meta.prefill_block_tables,
            meta.prefill_query_start_loc,
            meta.prefill_context_lens,
            scale,
            meta.max_prefill_query_len,
        )
    return out
