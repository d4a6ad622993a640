"""Iteration-level scheduling: one loop over a per-step token budget.

There are no separate prefill and decode phases: each step, every scheduled sequence computes
`num_scheduled_tokens` more of its tokens, so its `num_computed_tokens` catches up with `num_tokens`.
A long prompt is thereby split into chunks that share steps with decodes (chunked prefill), and a
prefix-cache hit simply starts a sequence with some tokens already computed.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from engine.kv_cache_manager import KVCacheManager
from engine.sequence import Sequence, SequenceStatus


@dataclass(slots=True)
class SchedulerOutput:
    token_budget: int
    scheduled: dict[Sequence, int] = field(default_factory=dict)  # sequence -> num_scheduled_tokens
    preempted: list[Sequence] = field(default_factory=list)
    admitted: list[Sequence] = field(default_factory=list)  # moved from waiting to running this step

    @property
    def num_scheduled_tokens(self) -> int:
        return sum(self.scheduled.values())

    def add(self, seq: Sequence, num_tokens: int) -> None:
        self.scheduled[seq] = num_tokens
        self.token_budget -= num_tokens

    def remove(self, seq: Sequence) -> None:
        self.token_budget += self.scheduled.pop(seq, 0)


class Scheduler:
    def __init__(self, kv: KVCacheManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: list[tuple[tuple, Sequence]] = []  # a heap ordered by Sequence.sort_key
        self.running: list[Sequence] = []
        self.num_preemptions = 0

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        seq.status = SequenceStatus.WAITING
        heapq.heappush(self.waiting, (seq.sort_key, seq))

    def finish(self, seq: Sequence) -> None:
        """Remove a sequence wherever it is and give its blocks back (full ones stay cached)."""
        if seq.status is SequenceStatus.RUNNING:
            self.running.remove(seq)
        elif seq.status is SequenceStatus.WAITING:
            self.waiting = [(k, s) for k, s in self.waiting if s is not seq]
            heapq.heapify(self.waiting)
        seq.status = SequenceStatus.FINISHED
        self.kv.free(seq)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput(token_budget=self.max_num_batched_tokens)
        # Decodes first so a long prefill chunk never starves them; priority order within each group.
        order = sorted(self.running, key=lambda s: (s.num_tokens - s.num_computed_tokens > 1, s.sort_key))
        # A more important request waiting to start gets a step without the sequences it outranks, so its
        # first token (TTFT) does not pay for their decodes; they resume next step.
        urgent = self._urgent_waiting()
        yielded = [s for s in order if urgent is not None and _outranks(urgent, s)]
        self._schedule_running([s for s in order if s not in yielded], out)
        if not out.preempted:
            self._admit_waiting(out, urgent)
        if yielded and urgent not in out.scheduled:  # it could not start after all: nobody yields
            self._schedule_running(yielded, out)
        return out

    def _schedule_running(self, seqs: list[Sequence], out: SchedulerOutput) -> None:
        for seq in seqs:
            if seq.status is SequenceStatus.RUNNING and out.token_budget > 0:
                num_new = self._num_new_with_drafts(seq, out.token_budget)
                if self._make_room(seq, num_new, out):
                    out.add(seq, num_new)

    def _urgent_waiting(self) -> Sequence | None:
        """The next waiting sequence, if it outranks a running one and there is a seat for it."""
        if not self.waiting or len(self.running) >= self.max_num_seqs:
            return None
        head = self.waiting[0][1]
        if head.blocked_on is not None or head.num_preemptions:
            return None
        return head if any(_outranks(head, s) for s in self.running) else None

    def update_from_output(self, out: SchedulerOutput) -> None:
        """Advance computed counts after the model ran, and publish newly full blocks to the cache.

        Draft tokens do not count yet: each becomes computed only once verification accepts it.
        """
        for seq, num_tokens in out.scheduled.items():
            seq.num_computed_tokens += num_tokens - len(seq.spec_token_ids)
            self.kv.cache_computed_blocks(seq)

    def _num_new_with_drafts(self, seq: Sequence, budget: int) -> int:
        """A running sequence's uncomputed tokens plus as many of its draft tokens as the budget and the
        free blocks allow; drafts that do not fit are dropped. Drafts take blocks only while a block per running
        sequence stays free: speculation should not crowd out the others' next blocks and force a preemption."""
        num_new = min(seq.num_tokens - seq.num_computed_tokens, budget)
        drafts = seq.spec_token_ids
        del drafts[max(0, budget - num_new) :]
        if drafts and (self.kv.num_free_blocks <= len(self.running) or not self.kv.allocate_slots(seq, num_new + len(drafts))):
            drafts.clear()
        return num_new + len(drafts)

    def _make_room(self, seq: Sequence, num_new: int, out: SchedulerOutput) -> bool:
        """Allocate slots for a running sequence, preempting the least important running ones as needed."""
        while not self.kv.allocate_slots(seq, num_new):
            victim = max(self.running, key=lambda s: s.sort_key)
            self._preempt(victim, out)
            if victim is seq:
                return False
        return True

    def _admit_waiting(self, out: SchedulerOutput, urgent: Sequence | None = None) -> None:
        """Start waiting sequences in priority order while budget, seats and blocks allow; with an `urgent`
        one, none that it outranks joins its step (they would lengthen it, as the running ones would)."""
        skipped = []
        while self.waiting and out.token_budget > 0 and len(self.running) < self.max_num_seqs:
            _, seq = heapq.heappop(self.waiting)
            if urgent is not None and _outranks(urgent, seq):
                skipped.append(seq)
                break
            if seq in out.preempted or (seq.blocked_on is not None and not self._prefix_ready(seq)):
                skipped.append(seq)
                continue
            cached_prefix = self.kv.find_cached_prefix(seq)
            num_new = min(seq.num_tokens - len(cached_prefix) * self.kv.block_size, out.token_budget)
            if not self._allocate_for_waiting(seq, num_new, cached_prefix, out):
                skipped.append(seq)
                break
            if seq.num_preemptions == 0:
                seq.num_cached_tokens = seq.num_computed_tokens
                self.kv.record_prefix_lookup(seq.num_prompt_tokens, seq.num_cached_tokens)
            seq.status = SequenceStatus.RUNNING
            self.running.append(seq)
            out.add(seq, num_new)
            out.admitted.append(seq)
        for seq in skipped:
            heapq.heappush(self.waiting, (seq.sort_key, seq))

    def _allocate_for_waiting(self, seq, num_new, cached_prefix, out: SchedulerOutput) -> bool:
        """Admit if blocks allow; a more important request may preempt less important running ones."""
        while not self.kv.allocate_slots(seq, num_new, cached_prefix):
            # Only a less important class is preempted, and not once it has aged past the newcomer.
            victims = [s for s in self.running if s.priority > seq.priority and s.sort_key > seq.sort_key]
            if not victims:
                return False
            self._preempt(max(victims, key=lambda s: s.sort_key), out)
        return True

    def _prefix_ready(self, seq: Sequence) -> bool:
        """n > 1 siblings wait for the first one's prompt to be computed, then share its cached blocks."""
        leader = seq.blocked_on
        if leader.is_finished or leader.num_computed_tokens >= leader.num_prompt_tokens:
            seq.blocked_on = None
            return True
        return False

    def _preempt(self, seq: Sequence, out: SchedulerOutput) -> None:
        """Recompute later: free the blocks now; full ones stay cached and mostly come back as hits."""
        out.remove(seq)
        self.running.remove(seq)
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        seq.spec_token_ids.clear()
        seq.num_preemptions += 1
        out.preempted.append(seq)
        self.num_preemptions += 1
        self.add(seq)


def _outranks(a: Sequence, b: Sequence) -> bool:
    """`a` is of a more important class than `b` and has not been overtaken by `b`'s aging."""
    return a.priority < b.priority and a.sort_key < b.sort_key
