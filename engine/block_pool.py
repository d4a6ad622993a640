"""Physical KV blocks: reference counts, the prefix-cache index, and LRU eviction.

A block is in exactly one state:

    in use   ref_cnt > 0                      held by at least one sequence
    cached   ref_cnt == 0 and block_hash set  in the free queue, still findable by hash
    free     ref_cnt == 0, no hash            in the free queue

The free queue is also the eviction order: allocation takes from its head (least recently freed),
so a cached block is evicted only when nothing plain-free is left ahead of it.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(slots=True, eq=False)
class Block:
    block_id: int
    ref_cnt: int = 0
    block_hash: bytes | None = None


def root_hash(cache_salt: str | None) -> bytes:
    """The parent of a sequence's first block: requests with different salts never share a block."""
    return hashlib.sha256(b"flowgate-kv\0" + (cache_salt or "").encode()).digest()


def hash_block(parent_hash: bytes, token_ids: Iterable[int]) -> bytes:
    """Identify a full block by its tokens and everything before it (via the parent's hash).

    SHA-256, not Python's hash(): a collision would serve one tenant another's KV, and tuple hashing
    collides by construction for crafted inputs. Input = 32-byte parent + token ids as uint32."""
    return hashlib.sha256(parent_hash + array("I", token_ids).tobytes()).digest()


class BlockPool:
    def __init__(self, num_blocks: int, enable_caching: bool = True):
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_queue: OrderedDict[int, Block] = OrderedDict((b.block_id, b) for b in self.blocks)
        self.cached: dict[bytes, Block] = {}

    @property
    def num_free_blocks(self) -> int:
        """Blocks that can be allocated now, cached ones included (they are evicted on demand)."""
        return len(self.free_queue)

    def lookup(self, block_hash: bytes) -> Block | None:
        return self.cached.get(block_hash) if self.enable_caching else None

    def allocate(self, n: int) -> list[Block]:
        if n > len(self.free_queue):
            raise ValueError(f"cannot allocate {n} blocks, {len(self.free_queue)} free")
        blocks = []
        for _ in range(n):
            _, block = self.free_queue.popitem(last=False)
            self._evict(block)
            block.ref_cnt = 1
            blocks.append(block)
        return blocks

    def touch(self, blocks: Iterable[Block]) -> None:
        """Take another reference on blocks found in the cache (reviving them if idle)."""
        for block in blocks:
            if block.ref_cnt == 0:
                del self.free_queue[block.block_id]
            block.ref_cnt += 1

    def free(self, blocks: Iterable[Block]) -> None:
        """Drop one reference each; pass a sequence's blocks tail first so its tail is evicted first."""
        for block in blocks:
            block.ref_cnt -= 1
            assert block.ref_cnt >= 0, f"block {block.block_id} freed twice"
            if block.ref_cnt == 0:
                if block.block_hash is None:
                    # Plain-free blocks go to the head: reuse them before evicting anything cached.
                    self.free_queue[block.block_id] = block
                    self.free_queue.move_to_end(block.block_id, last=False)
                else:
                    self.free_queue[block.block_id] = block

    def cache(self, block: Block, block_hash: bytes) -> None:
        """Register a block whose tokens are all computed. A duplicate of a cached block stays uncached."""
        if not self.enable_caching or block.block_hash is not None or block_hash in self.cached:
            return
        block.block_hash = block_hash
        self.cached[block_hash] = block

    def _evict(self, block: Block) -> None:
        if block.block_hash is not None:
            del self.cached[block.block_hash]
            block.block_hash = None

    def counts(self) -> tuple[int, int, int]:
        """(in use, cached and idle, plain free)."""
        idle_cached = sum(1 for b in self.free_queue.values() if b.block_hash is not None)
        return self.num_blocks - len(self.free_queue), idle_cached, len(self.free_queue) - idle_cached

    def check_integrity(self) -> None:
        used, cached, free = self.counts()
        assert used + cached + free == self.num_blocks
        assert used == sum(1 for b in self.blocks if b.ref_cnt > 0)
        assert all(b.ref_cnt == 0 for b in self.free_queue.values())
        assert all(self.cached[b.block_hash] is b for b in self.blocks if b.block_hash is not None)
        assert len(self.cached) == sum(1 for b in self.blocks if b.block_hash is not None)
