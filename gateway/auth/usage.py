"""The usage ledger teams bill on: per key and per tier, requests, prompt / cached / completion tokens and
errors by status. Redis hashes when there is Redis (shared by replicas), process memory otherwise or while
Redis is down (logged)."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

logger = logging.getLogger("flowgate.auth")
FIELDS = ("requests", "prompt_tokens", "cached_tokens", "completion_tokens")


class UsageLedger:
    def __init__(self, redis=None, prefix: str = "flowgate:"):
        self.redis = redis
        self.prefix = prefix
        self.memory: dict[str, Counter] = defaultdict(Counter)
        self._warned = False

    async def record(self, key_id: str, tier: str, **counts: int) -> None:
        """Add counts (FIELDS, or `errors_<status>`) to the key's and its tier's rows."""
        counts = {k: v for k, v in counts.items() if v}
        if not counts:
            return
        rows = (f"key:{key_id}", f"tier:{tier}")
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for row in rows:
                        for name, value in counts.items():
                            pipe.hincrby(f"{self.prefix}usage:{row}", name, value)
                    pipe.sadd(f"{self.prefix}usage:rows", *rows)
                    await pipe.execute()
                return
            except Exception as exc:
                if not self._warned:
                    logger.error("Redis unavailable for the usage ledger (%s); counting in memory",
                                 type(exc).__name__)
                    self._warned = True
        for row in rows:
            self.memory[row].update(counts)

    async def read(self) -> dict[str, dict[str, int]]:
        """{"key:<id>" | "tier:<tier>": {field: count}}; this replica's in-memory counts added in."""
        rows: dict[str, Counter] = defaultdict(Counter)
        if self.redis is not None:
            names = sorted(n.decode() for n in await self.redis.smembers(f"{self.prefix}usage:rows"))
            async with self.redis.pipeline(transaction=False) as pipe:
                for name in names:
                    pipe.hgetall(f"{self.prefix}usage:{name}")
                for name, row in zip(names, await pipe.execute(), strict=True):
                    rows[name].update({k.decode(): int(v) for k, v in row.items()})
        for name, row in self.memory.items():
            rows[name].update(row)
        return {name: {f: row.get(f, 0) for f in FIELDS} | {k: v for k, v in sorted(row.items()) if k not in FIELDS}
                for name, row in sorted(rows.items())}
