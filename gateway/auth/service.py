"""Everything auth, limits and admission share in one process, built from AuthConfig in the app's lifespan
(app.state.tiers) and used by the middleware and the per-request engine wrapper."""

from __future__ import annotations

import logging

from gateway.admission import TierGate
from gateway.auth.config import AuthConfig
from gateway.auth.keys import KeyRecord, load_pepper, verify
from gateway.auth.limits import RateLimiter
from gateway.auth.store import FileKeyStore, KeyCache, RedisKeyStore
from gateway.auth.usage import UsageLedger
from gateway.errors import AuthenticationFailed

logger = logging.getLogger("flowgate.auth")


def redis_client(url: str):
    import redis.asyncio
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    # Short timeouts and no retries: with Redis down a request falls back to local state instead of hanging.
    return redis.asyncio.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5,
                                        retry=Retry(NoBackoff(), 0))


def key_store(config: AuthConfig, redis=None) -> RedisKeyStore | FileKeyStore:
    return RedisKeyStore(redis, config.redis_prefix) if redis is not None else FileKeyStore(config.keys_file)


class Tiers:
    def __init__(self, config: AuthConfig):
        self.config = config
        self.redis = redis_client(config.redis_url) if config.redis_url else None
        self.pepper = load_pepper(config.pepper_file)
        self.keys = KeyCache(key_store(config, self.redis))
        self.limiter = RateLimiter(self.redis, config.redis_prefix)
        self.ledger = UsageLedger(self.redis, config.redis_prefix)
        self.gates = {tier: TierGate(tier, a.inflight, a.queue, config.queue_timeout_s, config.max_wait_s)
                      for tier, a in config.admission.items()}
        self._open_mode_logged = False

    async def authenticate(self, presented: str | None) -> KeyRecord | None:
        """The key's record; None in open mode (no key exists at all). Raises AuthenticationFailed."""
        records = await self.keys.get()
        if not records:
            if not self._open_mode_logged:
                logger.warning("no API keys exist: authentication is off (open mode); "
                               "create one with `flowgate keys create`")
                self._open_mode_logged = True
            return None
        self._open_mode_logged = False
        record = verify(self.pepper, presented, records) if presented else None
        if record is None:
            raise AuthenticationFailed()
        return record

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
