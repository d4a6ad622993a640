"""Admission per tier, and fairness between the keys of a tier, before requests reach the engine.

Each tier has its own gate: at most `inflight` of its requests in the engine and `queue` waiting, and no
newcomer queued whose projected wait (waiting requests x mean time in the engine / inflight) is over
`max_wait_s`: an overloaded tier answers at once instead of timing requests out. Free
traffic therefore fills and overflows only its own gate (fast 429s with Retry-After) while paid requests
go straight through to the engine, whose priority scheduling puts them first; paid is refused only when
paid traffic alone fills the paid gate.

Within a gate, waiting requests are served by a virtual token counter (Sheng et al., "Fairness in Serving
Large Language Models", OSDI '24): the key that has been served the fewest tokens goes next, and a key that
was idle re-enters at the least-served active key's count, so it cannot bank credit. When the queue is full,
the key with the most waiting requests loses its newest one to a key with fewer (push-out), so one key
flooding a tier cannot fill the queue and shut the others out.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field

from gateway.errors import RateLimited

RETRY_AFTER_S = 1


@dataclass(slots=True, eq=False)
class _Waiter:
    key_id: str
    cost: int
    future: asyncio.Future = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class TierGate:
    def __init__(self, tier: str, inflight: int, queue: int, timeout_s: float, max_wait_s: float = float("inf")):
        self.tier = tier
        self.capacity = inflight
        self.max_waiting = queue
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self.mean_service_s: float | None = None  # moving average of a request's time in the engine
        self.inflight = 0
        self.waiting: dict[str, deque[_Waiter]] = {}
        self.num_waiting = 0
        self.served: dict[str, float] = defaultdict(float)  # virtual token counter per key
        self.inflight_by_key: dict[str, int] = defaultdict(int)
        self.num_refused = 0

    async def acquire(self, key_id: str, cost: int) -> float:
        """Return (the start time, for release) once the request may enter the engine; raise RateLimited
        if the tier is full."""
        self._lift(key_id)
        if self.inflight < self.capacity and not self.num_waiting:
            self._start(key_id, cost)
            return time.monotonic()
        waiter = _Waiter(key_id, cost)
        self._enqueue(waiter)
        try:
            await asyncio.wait_for(waiter.future, self.timeout_s)
        except TimeoutError:
            self._forget(waiter)
            raise self._refusal(f"waited {self.timeout_s:.0f} s in the {self.tier} tier's queue") from None
        except BaseException:
            if waiter.future.done() and not waiter.future.cancelled() and waiter.future.exception() is None:
                self.release(key_id, cost, 0)  # granted just as the caller left
            else:
                self._forget(waiter)
            raise
        return time.monotonic()

    def release(self, key_id: str, cost: int, used: int, started: float | None = None) -> None:
        """The request left the engine having used `used` tokens of the `cost` it was admitted with."""
        if started is not None and used:
            took = time.monotonic() - started
            self.mean_service_s = took if self.mean_service_s is None else 0.8 * self.mean_service_s + 0.2 * took
        self.inflight -= 1
        self.inflight_by_key[key_id] -= 1
        if not self.inflight_by_key[key_id]:
            del self.inflight_by_key[key_id]
        self.served[key_id] += used - cost
        self._dispatch()

    def _start(self, key_id: str, cost: int) -> None:
        self.inflight += 1
        self.inflight_by_key[key_id] += 1
        self.served[key_id] += cost

    def _lift(self, key_id: str) -> None:
        """An idle key re-enters at the least-served active key's counter (no credit for idleness)."""
        if key_id in self.waiting or key_id in self.inflight_by_key:
            return
        active = [self.served[k] for k in (*self.waiting, *self.inflight_by_key)]
        if active:
            self.served[key_id] = max(self.served[key_id], min(active))

    def projected_wait_s(self) -> float:
        """How long a request queued now would wait, from the recent time requests spend in the engine."""
        if self.mean_service_s is None:
            return 0.0
        return (self.num_waiting + 1) * self.mean_service_s / self.capacity

    def _enqueue(self, waiter: _Waiter) -> None:
        if self.num_waiting >= self.max_waiting or self.projected_wait_s() > self.max_wait_s:
            mine = len(self.waiting.get(waiter.key_id, ()))
            heaviest = max(self.waiting, key=lambda k: len(self.waiting[k]))
            if heaviest == waiter.key_id or len(self.waiting[heaviest]) <= mine + 1:
                raise self._refusal(f"the {self.tier} tier is at capacity")
            victim = self.waiting[heaviest].pop()
            self._drop_if_empty(heaviest)
            self.num_waiting -= 1
            victim.future.set_exception(self._refusal(f"the {self.tier} tier is at capacity"))
        self.waiting.setdefault(waiter.key_id, deque()).append(waiter)
        self.num_waiting += 1

    def _dispatch(self) -> None:
        while self.inflight < self.capacity and self.num_waiting:
            # Ties go to the key with fewer requests waiting (the lighter user).
            key_id = min(self.waiting, key=lambda k: (self.served[k], len(self.waiting[k])))
            waiter = self.waiting[key_id].popleft()
            self._drop_if_empty(key_id)
            self.num_waiting -= 1
            if not waiter.future.done():
                self._start(key_id, waiter.cost)
                waiter.future.set_result(None)

    def _forget(self, waiter: _Waiter) -> None:
        queue = self.waiting.get(waiter.key_id)
        if queue is not None and waiter in queue:
            queue.remove(waiter)
            self.num_waiting -= 1
            self._drop_if_empty(waiter.key_id)

    def _drop_if_empty(self, key_id: str) -> None:
        if not self.waiting[key_id]:
            del self.waiting[key_id]

    def _refusal(self, why: str) -> RateLimited:
        self.num_refused += 1
        return RateLimited(f"The server is busy: {why}. Please retry after {RETRY_AFTER_S} s.",
                           headers={"retry-after": str(RETRY_AFTER_S)}, code="tier_capacity_exceeded")
