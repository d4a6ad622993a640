"""Per-sequence KV bookkeeping on top of the block pool: prefix hits, slot allocation, caching, freeing."""

from __future__ import annotations

from engine.block_pool import Block, BlockPool, hash_block, root_hash
from engine.sequence import Sequence


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


class KVCacheManager:
    def __init__(self, num_blocks: int, block_size: int, enable_caching: bool = True):
        self.block_size = block_size
        self.pool = BlockPool(num_blocks, enable_caching)
        self.num_prefix_queries = 0  # prompt tokens looked up in the cache
        self.num_prefix_hits = 0  # of which found

    @property
    def num_free_blocks(self) -> int:
        return self.pool.num_free_blocks

    @property
    def prefix_hit_rate(self) -> float:
        return self.num_prefix_hits / self.num_prefix_queries if self.num_prefix_queries else 0.0

    def blocks_needed(self, num_tokens: int) -> int:
        return cdiv(num_tokens, self.block_size)

    def find_cached_prefix(self, seq: Sequence) -> list[Block]:
        """The longest run of cached full blocks that starts the sequence.

        Never covers the last token: its logits are needed, so it is always computed.
        """
        if not self.pool.enable_caching:
            return []
        self._hash_full_blocks(seq, seq.num_tokens - 1)
        hits = []
        for block_hash in seq.block_hashes[: (seq.num_tokens - 1) // self.block_size]:
            block = self.pool.lookup(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def allocate_slots(self, seq: Sequence, num_new_tokens: int, cached_prefix: list[Block] = ()) -> bool:
        """Make room for `num_new_tokens` more tokens after the computed ones (and any cached prefix).

        Returns False, changing nothing, when the pool cannot supply the blocks.
        """
        num_tokens = seq.num_computed_tokens + len(cached_prefix) * self.block_size + num_new_tokens
        num_new_blocks = self.blocks_needed(num_tokens) - len(seq.block_table) - len(cached_prefix)
        num_revived = sum(1 for b in cached_prefix if b.ref_cnt == 0)
        if num_new_blocks + num_revived > self.pool.num_free_blocks:
            return False
        if cached_prefix:
            self.pool.touch(cached_prefix)
            seq.block_table.extend(b.block_id for b in cached_prefix)
            seq.num_computed_tokens += len(cached_prefix) * self.block_size
        if num_new_blocks > 0:
            seq.block_table.extend(b.block_id for b in self.pool.allocate(num_new_blocks))
        return True

    def cache_computed_blocks(self, seq: Sequence) -> None:
        """Publish the sequence's blocks whose every token now has its KV in the cache."""
        if not self.pool.enable_caching:
            return
        num_full = seq.num_computed_tokens // self.block_size
        self._hash_full_blocks(seq, num_full * self.block_size)
        for i in range(seq.num_published_blocks, num_full):
            block = self.pool.blocks[seq.block_table[i]]
            if block.block_hash is None:
                self.pool.cache(block, seq.block_hashes[i])
        seq.num_published_blocks = num_full

    def record_prefix_lookup(self, num_prompt_tokens: int, num_hit_tokens: int) -> None:
        self.num_prefix_queries += num_prompt_tokens
        self.num_prefix_hits += num_hit_tokens

    def free(self, seq: Sequence) -> None:
        self.pool.free(self.pool.blocks[i] for i in reversed(seq.block_table))
        seq.block_table.clear()
        seq.num_published_blocks = 0

    def free_tail(self, seq: Sequence) -> None:
        """Give back blocks past the computed tokens (the slots of rejected draft tokens). They were never
        published, so they return as plain free blocks."""
        keep = self.blocks_needed(seq.num_computed_tokens)
        if len(seq.block_table) > keep:
            self.pool.free(self.pool.blocks[i] for i in reversed(seq.block_table[keep:]))
            del seq.block_table[keep:]

    def _hash_full_blocks(self, seq: Sequence, num_tokens: int) -> None:
        bs = self.block_size
        for i in range(len(seq.block_hashes), num_tokens // bs):
            parent = seq.block_hashes[i - 1] if i else root_hash(seq.cache_salt)
            seq.block_hashes.append(hash_block(parent, seq.token_ids[i * bs : (i + 1) * bs]))
