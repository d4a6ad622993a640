"""Scheduler aging (its documented bound) and prefix-cache isolation by cache salt, without a model."""

from engine.block_pool import hash_block, root_hash
from engine.kv_cache_manager import KVCacheManager
from engine.protocol import SamplingParams
from engine.scheduler import Scheduler
from engine.sequence import Sequence, SequenceStatus

AGING_S = 10.0


def seq(seq_id: int, priority: int, arrival: float, tokens=None, salt=None, aging_s=AGING_S) -> Sequence:
    tokens = tokens or [seq_id % 50 + 1] * 6
    return Sequence(seq_id=seq_id, request_id=str(seq_id), index=0, token_ids=list(tokens),
                    num_prompt_tokens=len(tokens), params=SamplingParams(), max_tokens=1, priority=priority,
                    arrival_time=arrival, aging_s=aging_s, cache_salt=salt)


def run_one(scheduler: Scheduler) -> Sequence:
    """Schedule a step with room for one sequence and finish whatever ran."""
    out = scheduler.schedule()
    [ran] = out.scheduled
    scheduler.update_from_output(out)
    scheduler.finish(ran)
    return ran


def test_aging_orders_by_the_documented_bound():
    scheduler = Scheduler(KVCacheManager(num_blocks=64, block_size=4), max_num_seqs=1, max_num_batched_tokens=64)
    free = seq(0, priority=1, arrival=0.0)
    before_bound = seq(1, priority=0, arrival=AGING_S - 0.5)  # arrived within (p - q) * aging_s: goes first
    after_bound = seq(2, priority=0, arrival=AGING_S + 0.5)  # arrived later: waits behind the free one
    for s in (after_bound, free, before_bound):
        scheduler.add(s)
    assert [run_one(scheduler).seq_id for _ in range(3)] == [1, 0, 2]


def test_a_stream_of_paid_requests_cannot_starve_a_free_one():
    """One paid request arrives every second forever; the free one still runs once the bound has passed."""
    scheduler = Scheduler(KVCacheManager(num_blocks=64, block_size=4), max_num_seqs=1, max_num_batched_tokens=64)
    scheduler.add(seq(0, priority=1, arrival=0.0))
    for second in range(100):
        scheduler.add(seq(second + 1, priority=0, arrival=float(second)))
        if run_one(scheduler).seq_id == 0:
            break
    else:
        raise AssertionError("the free request never ran")
    assert second <= AGING_S + 1


def test_without_aging_priority_is_strict():
    scheduler = Scheduler(KVCacheManager(num_blocks=64, block_size=4), max_num_seqs=1, max_num_batched_tokens=64)
    scheduler.add(seq(0, priority=1, arrival=0.0, aging_s=0.0))
    scheduler.add(seq(1, priority=0, arrival=1000.0, aging_s=0.0))
    assert run_one(scheduler).seq_id == 1


def test_an_aged_request_is_not_preempted_by_a_newcomer():
    kv = KVCacheManager(num_blocks=3, block_size=4)
    scheduler = Scheduler(kv, max_num_seqs=4, max_num_batched_tokens=64)
    old_free = seq(0, priority=1, arrival=0.0, tokens=[1] * 8)
    scheduler.add(old_free)
    scheduler.update_from_output(scheduler.schedule())
    late_paid = seq(1, priority=0, arrival=3 * AGING_S, tokens=[2] * 8)  # needs 2 of the 3 blocks
    scheduler.add(late_paid)
    out = scheduler.schedule()
    assert old_free.status is SequenceStatus.RUNNING and not out.preempted
    early_paid = seq(2, priority=0, arrival=0.5 * AGING_S, tokens=[3] * 8)
    scheduler.add(early_paid)
    out = scheduler.schedule()
    assert old_free in out.preempted  # a paid request within the bound still preempts it
    kv.pool.check_integrity()


def cached_tokens(kv: KVCacheManager, s: Sequence) -> int:
    return len(kv.find_cached_prefix(s)) * kv.block_size


def compute_and_release(kv: KVCacheManager, s: Sequence) -> None:
    assert kv.allocate_slots(s, s.num_tokens)
    s.num_computed_tokens = s.num_tokens
    kv.cache_computed_blocks(s)
    kv.free(s)


def test_prefix_cache_is_isolated_by_salt():
    kv = KVCacheManager(num_blocks=32, block_size=4)
    prompt = list(range(1, 14))
    compute_and_release(kv, seq(0, 0, 0.0, tokens=prompt, salt="tenant-a"))
    assert cached_tokens(kv, seq(1, 0, 0.0, tokens=prompt, salt="tenant-a")) == 12
    assert cached_tokens(kv, seq(2, 0, 0.0, tokens=prompt, salt="tenant-b")) == 0
    assert cached_tokens(kv, seq(3, 0, 0.0, tokens=prompt, salt=None)) == 0
    kv.pool.check_integrity()


def test_block_hashes_are_sha256_chained_from_the_salt():
    a = hash_block(root_hash("a"), [1, 2, 3, 4])
    assert len(a) == 32
    assert a != hash_block(root_hash("b"), [1, 2, 3, 4])
    assert a != hash_block(root_hash("a"), [1, 2, 3, 5])
    assert hash_block(a, [5]) != hash_block(root_hash("a"), [5])


def test_a_paid_arrival_gets_a_step_without_the_free_decodes_it_outranks():
    kv = KVCacheManager(num_blocks=64, block_size=4)
    scheduler = Scheduler(kv, max_num_seqs=8, max_num_batched_tokens=64)
    free = [seq(i, priority=1, arrival=0.0) for i in range(3)]
    for s in free:
        scheduler.add(s)
    scheduler.update_from_output(scheduler.schedule())
    for s in free:
        s.token_ids.append(7)  # each now decodes one token per step
    paid = seq(10, priority=0, arrival=1.0)
    late_free = seq(11, priority=1, arrival=0.5)  # waiting too: it does not join the paid request's step
    scheduler.add(paid)
    scheduler.add(late_free)
    out = scheduler.schedule()
    assert list(out.scheduled) == [paid]
    scheduler.update_from_output(out)
    paid.token_ids.append(7)
    assert set(scheduler.schedule().scheduled) == {paid, *free, late_free}  # next step everyone runs together
    kv.pool.check_integrity()
