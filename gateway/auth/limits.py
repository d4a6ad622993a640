"""Per-key rate limits: requests per minute, tokens per minute, concurrent requests.

With Redis, one Lua script checks and takes all three in one round trip, atomically across replicas; the
counters are fixed one-minute windows. Without Redis, or while it is down, the same rules run in process
memory (logged once, counted in flowgate_ratelimit_fallback_total) so that no request fails for it.
Tokens are reserved at admission (prompt + max_tokens * n) and the unused part is given back at the end.
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from dataclasses import dataclass

from prometheus_client import Counter

from gateway.auth.keys import Limits
from gateway.errors import RateLimited

logger = logging.getLogger("flowgate.auth")
WINDOW_S = 60
REDIS_RETRY_S = 5.0  # after a Redis failure, use memory for this long before trying again
FALLBACKS = Counter("flowgate_ratelimit_fallback_total", "Rate-limit checks done in memory because Redis failed")

# KEYS: requests, tokens (this window), concurrency. ARGV: rpm, tpm, max_concurrent (0 = unlimited),
# tokens, count_request, take_concurrency, window ttl. Returns {refused_by (0 = admitted), req, tok, conc}.
_ADMIT = """
local req = tonumber(redis.call('GET', KEYS[1]) or '0')
local tok = tonumber(redis.call('GET', KEYS[2]) or '0')
local conc = tonumber(redis.call('GET', KEYS[3]) or '0')
local rpm, tpm, maxc = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n, count, take = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
if rpm > 0 and count == 1 and req + 1 > rpm then return {1, req, tok, conc} end
if tpm > 0 and tok + n > tpm then return {2, req, tok, conc} end
if maxc > 0 and take == 1 and conc + 1 > maxc then return {3, req, tok, conc} end
if count == 1 then req = redis.call('INCR', KEYS[1]); redis.call('EXPIRE', KEYS[1], ARGV[7]) end
if n > 0 then tok = redis.call('INCRBY', KEYS[2], n); redis.call('EXPIRE', KEYS[2], ARGV[7]) end
if take == 1 then conc = redis.call('INCR', KEYS[3]); redis.call('EXPIRE', KEYS[3], 3600) end
return {0, req, tok, conc}
"""
# KEYS: tokens (the reservation's window), concurrency. ARGV: tokens to give back, release concurrency.
_RELEASE = """
if tonumber(ARGV[1]) ~= 0 and redis.call('EXISTS', KEYS[1]) == 1 then redis.call('DECRBY', KEYS[1], ARGV[1]) end
if ARGV[2] == '1' and redis.call('DECR', KEYS[2]) < 0 then redis.call('SET', KEYS[2], 0) end
"""
_REFUSED = {1: "requests per minute", 2: "tokens per minute", 3: "concurrent requests"}


@dataclass(slots=True)
class Ticket:
    """What admission took, so that release gives back exactly that, where it was taken."""

    key_id: str
    window: int
    tokens: int
    concurrency: bool
    in_redis: bool


class RateLimiter:
    def __init__(self, redis=None, prefix: str = "flowgate:"):
        self.redis = redis
        self.prefix = prefix
        self._admit = redis.register_script(_ADMIT) if redis is not None else None
        self._release = redis.register_script(_RELEASE) if redis is not None else None
        self._redis_down_until = 0.0
        self._memory: dict[tuple, int] = defaultdict(int)

    async def admit(self, key_id: str, limits: Limits, *, tokens: int, count_request: bool,
                    take_concurrency: bool) -> tuple[Ticket, dict[str, str]]:
        """Take a request, `tokens` and a concurrency slot, or raise RateLimited naming the limit.
        Returns the ticket and the x-ratelimit-* headers."""
        now = time.time()
        window = int(now // WINDOW_S)
        take_concurrency = take_concurrency and limits.max_concurrent is not None
        args = [limits.rpm or 0, limits.tpm or 0, limits.max_concurrent or 0, tokens, int(count_request),
                int(take_concurrency), WINDOW_S * 2]
        keys = self._keys(key_id, window)
        in_redis = False
        if self.redis is not None and now >= self._redis_down_until:
            try:
                refused, req, tok, _ = await self._admit(keys=keys, args=args)
                in_redis = True
            except Exception as exc:  # ConnectionError, TimeoutError, ...: fall back, never fail the request
                self._redis_failed(exc)
        if not in_redis:
            refused, req, tok, _ = self._admit_in_memory(keys, *args[:6])
        reset_s = (window + 1) * WINDOW_S - now
        headers = _headers(limits, req, tok, reset_s)
        if refused:
            retry_after = 1 if refused == 3 else math.ceil(reset_s)
            raise RateLimited(
                f"Rate limit reached for {_REFUSED[refused]} on key {key_id}: "
                f"{_limit_of(limits, refused)} allowed. Try again in {retry_after} s.",
                headers=headers | {"retry-after": str(retry_after)},
            )
        return Ticket(key_id, window, tokens, take_concurrency, in_redis), headers

    async def release(self, ticket: Ticket, used_tokens: int) -> None:
        give_back = max(ticket.tokens - used_tokens, 0)
        if not give_back and not ticket.concurrency:
            return
        keys = self._keys(ticket.key_id, ticket.window)
        if ticket.in_redis:
            try:
                await self._release(keys=[keys[1], keys[2]], args=[give_back, int(ticket.concurrency)])
                return
            except Exception as exc:
                self._redis_failed(exc)
                return  # the concurrency counter expires; better than guessing
        if keys[1] in self._memory:
            self._memory[keys[1]] -= give_back
        if ticket.concurrency:
            self._memory[keys[2]] = max(self._memory[keys[2]] - 1, 0)

    def _keys(self, key_id: str, window: int) -> list[str]:
        base = f"{self.prefix}rl:{key_id}"
        return [f"{base}:req:{window}", f"{base}:tok:{window}", f"{base}:conc"]

    def _admit_in_memory(self, keys, rpm, tpm, max_concurrent, tokens, count, take) -> tuple[int, int, int, int]:
        m = self._memory
        self._forget_old_windows(keys)
        req, tok, conc = m[keys[0]], m[keys[1]], m[keys[2]]
        if rpm and count and req + 1 > rpm:
            return 1, req, tok, conc
        if tpm and tok + tokens > tpm:
            return 2, req, tok, conc
        if max_concurrent and take and conc + 1 > max_concurrent:
            return 3, req, tok, conc
        m[keys[0]] += count
        m[keys[1]] += tokens
        m[keys[2]] += take
        return 0, m[keys[0]], m[keys[1]], m[keys[2]]

    def _forget_old_windows(self, keys: list[str]) -> None:
        if len(self._memory) > 10_000:
            current = keys[0].rsplit(":", 1)[1]
            for k in [k for k in self._memory if not k.endswith((":conc", f":{current}"))]:
                del self._memory[k]

    def _redis_failed(self, exc: Exception) -> None:
        FALLBACKS.inc()
        if time.time() >= self._redis_down_until:
            logger.error("Redis unavailable for rate limits (%s); limiting in memory", type(exc).__name__)
        self._redis_down_until = time.time() + REDIS_RETRY_S


def _limit_of(limits: Limits, refused: int) -> int | None:
    return {1: limits.rpm, 2: limits.tpm, 3: limits.max_concurrent}[refused]


def _headers(limits: Limits, req: int, tok: int, reset_s: float) -> dict[str, str]:
    headers = {}
    reset = f"{math.ceil(reset_s)}s"
    if limits.rpm:
        headers |= {"x-ratelimit-limit-requests": str(limits.rpm),
                    "x-ratelimit-remaining-requests": str(max(limits.rpm - req, 0)),
                    "x-ratelimit-reset-requests": reset}
    if limits.tpm:
        headers |= {"x-ratelimit-limit-tokens": str(limits.tpm),
                    "x-ratelimit-remaining-tokens": str(max(limits.tpm - tok, 0)),
                    "x-ratelimit-reset-tokens": reset}
    return headers
