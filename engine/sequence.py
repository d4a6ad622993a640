"""One sequence: a request's prompt plus one of its `n` completions, and where its KV lives."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.protocol import FinishReason, SamplingParams

if TYPE_CHECKING:
    from engine.detokenizer import IncrementalDetokenizer
    from engine.logits_process import LogitsProcessor


class SequenceStatus(enum.Enum):
    WAITING = enum.auto()
    RUNNING = enum.auto()
    FINISHED = enum.auto()


@dataclass(slots=True, eq=False)
class Sequence:
    seq_id: int
    request_id: str
    index: int  # which of the request's n completions
    token_ids: list[int]  # prompt, then output
    num_prompt_tokens: int
    params: SamplingParams
    max_tokens: int  # resolved: params.max_tokens or what the context window leaves
    priority: int = 0
    arrival_time: float = 0.0
    aging_s: float = 0.0  # see sort_key; 0 disables aging
    status: SequenceStatus = SequenceStatus.WAITING
    num_computed_tokens: int = 0  # tokens whose KV is in the cache
    num_cached_tokens: int = 0  # prompt tokens served from the prefix cache at first admission
    num_preemptions: int = 0
    block_table: list[int] = field(default_factory=list)
    cache_salt: str | None = None  # folded into the first block's hash: prefix hits only within one salt
    block_hashes: list[bytes] = field(default_factory=list)  # chained hashes of this sequence's full blocks
    num_published_blocks: int = 0  # leading blocks of block_table already offered to the prefix cache
    blocked_on: Sequence | None = None  # n > 1: waits until this sibling's prompt is cached
    finish_reason: FinishReason | None = None
    stop_reason: int | str | None = None
    logits_processors: list[LogitsProcessor] = field(default_factory=list)
    generator: Any = None  # torch.Generator when the request carries a seed
    detokenizer: IncrementalDetokenizer | None = None
    pending_logprobs: list = field(default_factory=list)
    pending_token_ids: list[int] = field(default_factory=list)
    # (name, monotonic ns, index, num_tokens, duration ns): EngineEvent's fields before the wall-clock shift
    events: list[tuple] = field(default_factory=list)
    spec_token_ids: list[int] = field(default_factory=list)  # this step's draft tokens, after the last token
    spec: Any = None  # engine.spec.SpecState when speculative decoding is on

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status is SequenceStatus.FINISHED

    @property
    def sort_key(self) -> tuple[float, float, int]:
        """Scheduling order: lower priority value first, then arrival (FCFS), then creation.

        With aging, waiting lowers a request's priority value by 1 every `aging_s` seconds, so the order is
        by `priority * aging_s + arrival_time`, a key that does not change while it waits (the heap stays
        valid). The bound this gives: a request of priority p that arrived at t is ordered ahead of every
        request of priority q < p that arrives after t + (p - q) * aging_s; a free request is never
        starved by a stream of paid requests, it waits at most for those that arrived within that window."""
        if self.aging_s > 0:
            return (self.priority * self.aging_s + self.arrival_time, 0.0, self.seq_id)
        return (self.priority, self.arrival_time, self.seq_id)
