"""When to speculate, and how far: drafts cost target compute, which a large batch no longer has spare.

On a memory-bound step (few sequences) extra query rows are nearly free, so a draft token pays off even
when it is often rejected; as the batch grows each row costs real compute, and past `max_batch` sequences
none is drafted (vLLM measured 1.4-1.8x slowdowns from speculating at high load). Per sequence, draft j is
worth its row when it is likely to be reached and accepted, acceptance ** j >= threshold(batch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.spec.ngram import NgramIndex

DECAY = 0.9  # weight of the past in the running acceptance estimate, per verified step
MIN_GAIN = 0.1  # a draft at position j must be accepted with at least this probability at batch size 1


@dataclass(frozen=True)
class AdaptivePolicy:
    max_tokens: int  # k at most
    max_batch: int  # above this many running sequences, no drafting at all
    min_gain: float = MIN_GAIN

    def num_draft_tokens(self, batch_size: int, acceptance: float) -> int:
        if batch_size > self.max_batch or acceptance <= 0.0:
            return 0
        if acceptance >= 1.0:
            return self.max_tokens
        threshold = self.min_gain * math.sqrt(batch_size)
        return max(0, min(self.max_tokens, int(math.log(threshold) / math.log(acceptance))))


@dataclass(slots=True)
class SpecState:
    """One sequence's drafting state and acceptance record."""

    ngram: NgramIndex = field(default_factory=NgramIndex)
    num_draft_tokens: int = 0
    num_accepted_tokens: int = 0
    _trials: float = 0.0  # decayed counts of drafts verified and accepted: a draft is a trial only if
    _accepted: float = 0.0  # every draft before it was accepted (after a rejection the rest go unseen)

    @property
    def acceptance(self) -> float:
        """Running probability that a reached draft is accepted; 0.5 with no evidence (a Beta(1, 1) prior),
        drifting back there while the sequence does not draft, so a request that stopped drafting retries."""
        return (self._accepted + 1.0) / (self._trials + 2.0)

    @property
    def acceptance_rate(self) -> float:
        """Lifetime accepted / drafted, as reported in the engine stats."""
        return self.num_accepted_tokens / self.num_draft_tokens if self.num_draft_tokens else 0.0

    def record(self, num_drafted: int, num_accepted: int) -> None:
        self.num_draft_tokens += num_drafted
        self.num_accepted_tokens += num_accepted
        self._trials = DECAY * self._trials + num_accepted + (num_accepted < num_drafted)
        self._accepted = DECAY * self._accepted + num_accepted

    def decay(self) -> None:
        self._trials *= DECAY
        self._accepted *= DECAY
