"""Randomized property test of the KV block accounting under the real scheduler (no model needed)."""

import random

import pytest

from engine.block_pool import BlockPool
from engine.kv_cache_manager import KVCacheManager
from engine.protocol import SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Sequence, SequenceStatus

BLOCK_SIZE = 4


def make_seq(seq_id: int, rng: random.Random, prefixes: list[list[int]]) -> Sequence:
    prompt = rng.choice(prefixes)[: rng.randint(1, 24)] + [
        rng.randrange(50) for _ in range(rng.randint(0, 12))
    ]
    if not prompt:
        prompt = [1]
    return Sequence(
        seq_id=seq_id,
        request_id=str(seq_id),
        index=0,
        token_ids=prompt,
        num_prompt_tokens=len(prompt),
        params=SamplingParams(),
        max_tokens=rng.randint(1, 12),
        priority=rng.randint(0, 2),
        arrival_time=float(seq_id),
    )


def check(kv: KVCacheManager, scheduler: Scheduler) -> None:
    kv.pool.check_integrity()
    held = [b for s in scheduler.running for b in s.block_table]
    used, _, _ = kv.pool.counts()
    assert len(set(held)) == used  # every in-use block is held by a running sequence
    for seq in scheduler.running:
        assert len(seq.block_table) * BLOCK_SIZE >= seq.num_computed_tokens
    for _, seq in scheduler.waiting:
        assert seq.block_table == [] and seq.num_computed_tokens == 0


def run_step(scheduler: Scheduler, out, rng: random.Random) -> None:
    """What the engine does after the model ran: sample for sequences that caught up, finish the done ones."""
    scheduler.update_from_output(out)
    for seq in out.scheduled:
        if seq.num_computed_tokens == seq.num_tokens:
            seq.token_ids.append(rng.randrange(50))
            if seq.num_output_tokens >= seq.max_tokens:
                scheduler.finish(seq)


@pytest.mark.parametrize("seed", range(4))
def test_random_add_abort_finish_keeps_accounting(seed):
    rng = random.Random(seed)
    kv = KVCacheManager(num_blocks=rng.choice([12, 20, 40]), block_size=BLOCK_SIZE)
    scheduler = Scheduler(
        kv, max_num_seqs=rng.choice([2, 4, 8]), max_num_batched_tokens=rng.choice([8, 16, 64])
    )
    prefixes = [[rng.randrange(50) for _ in range(24)] for _ in range(3)]
    live: list[Sequence] = []
    ops = 0
    for seq_id in range(1200):
        op = rng.random()
        if op < 0.45:
            seq = make_seq(seq_id, rng, prefixes)
            if kv.blocks_needed(seq.num_tokens + seq.max_tokens) <= kv.pool.num_blocks:
                scheduler.add(seq)
                live.append(seq)
        elif op < 0.55 and live:
            seq = live.pop(rng.randrange(len(live)))
            scheduler.finish(seq)  # an abort
        out = scheduler.schedule()
        assert out.num_scheduled_tokens <= scheduler.max_num_batched_tokens
        assert len(scheduler.running) <= scheduler.max_num_seqs
        run_step(scheduler, out, rng)
        live = [s for s in live if s.status is not SequenceStatus.FINISHED]
        check(kv, scheduler)
        ops += 1
    while scheduler.has_unfinished():  # drain: never deadlocks
        out = scheduler.schedule()
        assert out.scheduled, "scheduler made no progress with work pending"
        run_step(scheduler, out, rng)
        check(kv, scheduler)
        ops += 1
    assert ops >= 1200
    assert scheduler.num_preemptions > 0 and kv.num_prefix_hits > 0  # both paths were exercised
    used, cached, free = kv.pool.counts()
    assert used == 0 and cached + free == kv.pool.num_blocks


def test_prefix_hit_never_covers_last_token():
    kv = KVCacheManager(num_blocks=16, block_size=BLOCK_SIZE)
    scheduler = Scheduler(kv, max_num_seqs=4, max_num_batched_tokens=64)
    prompt = list(range(8))  # exactly two full blocks
    first = Sequence(0, "a", 0, list(prompt), 8, SamplingParams(), 4)
    scheduler.add(first)
    scheduler.update_from_output(scheduler.schedule())
    scheduler.finish(first)
    second = Sequence(1, "b", 0, list(prompt), 8, SamplingParams(), 4)
    scheduler.add(second)
    out = scheduler.schedule()
    assert second.num_cached_tokens == 4  # the block holding the last prompt token is recomputed
    assert out.scheduled[second] == 4


def test_lru_eviction_takes_plain_free_blocks_first():
    pool = BlockPool(4)
    a, b = pool.allocate(2)
    pool.cache(a, 111)
    pool.free([b, a])
    fresh = pool.allocate(2)
    assert a not in fresh and pool.lookup(111) is a  # the cached block survived
    pool.free(fresh)
    pool.allocate(4)
    assert pool.lookup(111) is None  # evicted only when nothing else was left
