"""Run a model on hand-built steps, without an engine: for teacher-forced comparisons in tests and checks.

A step is a list of `Chunk`s (decodes first, as AttentionMetadata requires); each covers positions
`start .. start + len(token_ids) - 1` of one sequence whose cache blocks are `block_table`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.attention import AttentionMetadata
from engine.models.config import ModelConfig
from engine.models.llama import KVCache, LlamaForCausalLM


@dataclass(frozen=True)
class Chunk:
    token_ids: list[int]
    start: int  # tokens of this sequence already in the cache
    block_table: list[int]

    @property
    def context_len(self) -> int:
        return self.start + len(self.token_ids)


def allocate_kv_caches(
    config: ModelConfig, num_blocks: int, block_size: int, dtype: torch.dtype, device
) -> list[KVCache]:
    shape = (num_blocks, block_size, config.num_key_value_heads, config.head_dim)
    return [
        (torch.zeros(shape, dtype=dtype, device=device), torch.zeros(shape, dtype=dtype, device=device))
        for _ in range(config.num_hidden_layers)
    ]


def attention_metadata(
    decodes: list[Chunk], prefills: list[Chunk], block_size: int, device
) -> AttentionMetadata:
    assert all(len(c.token_ids) == 1 for c in decodes)
    slots = [
        c.block_table[pos // block_size] * block_size + pos % block_size
        for c in decodes + prefills
        for pos in range(c.start, c.context_len)
    ]
    query_lens = [len(c.token_ids) for c in prefills]
    query_start_loc = torch.tensor([0, *query_lens], dtype=torch.int32).cumsum(0, dtype=torch.int32)
    return AttentionMetadata(
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device),
        num_decode_tokens=len(decodes),
        decode_block_tables=_block_tables(decodes, device),
        decode_context_lens=torch.tensor([c.context_len for c in decodes], dtype=torch.int32, device=device),
        prefill_block_tables=_block_tables(prefills, device),
        prefill_query_start_loc=query_start_loc.to(device),
        prefill_context_lens=torch.tensor(
            [c.context_len for c in prefills], dtype=torch.int32, device=device
        ),
        max_prefill_query_len=max(query_lens, default=0),
    )


@torch.inference_mode()
def run_step(
    model: LlamaForCausalLM,
    kv_caches: list[KVCache],
    decodes: list[Chunk],
    prefills: list[Chunk],
    block_size: int,
) -> list[torch.Tensor]:
    """Logits [len(chunk.token_ids), vocab] (fp32) for each chunk, decodes first."""
    chunks = decodes + prefills
    device = kv_caches[0][0].device
    input_ids = torch.tensor([t for c in chunks for t in c.token_ids], dtype=torch.int64, device=device)
    positions = torch.cat([torch.arange(c.start, c.context_len) for c in chunks]).to(device)
    meta = attention_metadata(decodes, prefills, block_size, device)
    logits = model.compute_logits(model(input_ids, positions, kv_caches, meta))
    return list(logits.split([len(c.token_ids) for c in chunks]))


def prompt_logits(model: LlamaForCausalLM, token_ids: list[int], block_size: int = 16) -> torch.Tensor:
    """Teacher-forced logits [len(token_ids), vocab] of one prompt run as a single prefill."""
    num_blocks = -(-len(token_ids) // block_size)
    param = next(model.parameters())
    kv_caches = allocate_kv_caches(model.config, num_blocks, block_size, param.dtype, param.device)
    chunk = Chunk(token_ids, start=0, block_table=list(range(num_blocks)))
    (logits,) = run_step(model, kv_caches, [], [chunk], block_size)
    return logits


def _block_tables(chunks: list[Chunk], device) -> torch.Tensor:
    width = max((len(c.block_table) for c in chunks), default=0)
    rows = [c.block_table + [0] * (width - len(c.block_table)) for c in chunks]
    return torch.tensor(rows, dtype=torch.int32, device=device).reshape(len(chunks), width)
