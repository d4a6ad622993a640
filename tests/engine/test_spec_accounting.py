"""The block-accounting property test with speculation: drafts scheduled, a random prefix accepted, the
rejected slots rolled back; check_integrity and exact block counts after every step (no model needed)."""

import random

import pytest

from engine.kv_cache_manager import KVCacheManager, cdiv
from engine.scheduler import Scheduler
from engine.sequence import Sequence, SequenceStatus
from tests.engine.test_block_accounting import BLOCK_SIZE, check, make_seq


def propose(scheduler: Scheduler, rng: random.Random) -> None:
    """What the speculator does before a step: random drafts for decoding sequences, never past max_tokens."""
    for seq in scheduler.running:
        seq.spec_token_ids = []
        room = seq.max_tokens - seq.num_output_tokens - 1
        if seq.num_tokens - seq.num_computed_tokens == 1 and room > 0 and rng.random() < 0.7:
            seq.spec_token_ids = [rng.randrange(50) for _ in range(rng.randint(1, min(room, 5)))]


def verify(scheduler: Scheduler, kv: KVCacheManager, out, rng: random.Random) -> None:
    """What the engine does after the model ran: accept a random prefix of the drafts plus one token."""
    scheduler.update_from_output(out)
    for seq, num_scheduled in out.scheduled.items():
        drafts, seq.spec_token_ids = seq.spec_token_ids, []
        if seq.num_computed_tokens != seq.num_tokens:
            assert not drafts
            continue
        assert not drafts or num_scheduled == 1 + len(drafts)
        num_accepted = rng.randint(0, len(drafts))
        seq.token_ids.extend(drafts[:num_accepted])
        seq.num_computed_tokens += num_accepted
        seq.token_ids.append(rng.randrange(50))  # the correction (or bonus) token
        assert seq.num_output_tokens <= seq.max_tokens
        if seq.num_output_tokens == seq.max_tokens:
            scheduler.finish(seq)
        else:
            kv.free_tail(seq)
            assert len(seq.block_table) == cdiv(seq.num_computed_tokens, BLOCK_SIZE)
            assert seq.num_computed_tokens == seq.num_tokens - 1


@pytest.mark.parametrize("seed", range(4))
def test_speculation_keeps_block_accounting_exact(seed):
    rng = random.Random(seed)
    kv = KVCacheManager(num_blocks=rng.choice([12, 20, 40]), block_size=BLOCK_SIZE)
    scheduler = Scheduler(kv, max_num_seqs=rng.choice([2, 4, 8]), max_num_batched_tokens=rng.choice([8, 16, 64]))
    prefixes = [[rng.randrange(50) for _ in range(24)] for _ in range(3)]
    live: list[Sequence] = []
    num_drafted = 0
    for seq_id in range(1000):
        if rng.random() < 0.45:
            seq = make_seq(seq_id, rng, prefixes)
            seq.max_tokens = rng.randint(1, 20)
            if kv.blocks_needed(seq.num_tokens + seq.max_tokens) <= kv.pool.num_blocks:
                scheduler.add(seq)
                live.append(seq)
        elif rng.random() < 0.1 and live:
            scheduler.finish(live.pop(rng.randrange(len(live))))  # an abort
        propose(scheduler, rng)
        out = scheduler.schedule()
        num_drafted += sum(len(s.spec_token_ids) for s in out.scheduled)
        assert out.num_scheduled_tokens <= scheduler.max_num_batched_tokens
        assert all(not s.spec_token_ids for s in out.preempted)
        verify(scheduler, kv, out, rng)
        live = [s for s in live if s.status is not SequenceStatus.FINISHED]
        check(kv, scheduler)
    while scheduler.has_unfinished():
        propose(scheduler, rng)
        out = scheduler.schedule()
        assert out.scheduled
        verify(scheduler, kv, out, rng)
        check(kv, scheduler)
    assert num_drafted > 500 and scheduler.num_preemptions > 0 and kv.num_prefix_hits > 0
    used, cached, free = kv.pool.counts()
    assert used == 0 and cached + free == kv.pool.num_blocks
