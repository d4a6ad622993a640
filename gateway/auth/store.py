"""Where keys live so that every replica sees them: a Redis hash (with a version counter bumped on every
change), or a JSON file when there is no Redis. Both are read through `KeyCache`, which serves the last
snapshot it loaded and re-checks the version at most every KEY_REFRESH_S."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
from pathlib import Path

import msgspec

from gateway.auth.config import KEY_REFRESH_S
from gateway.auth.keys import KeyRecord, embedded_worker_key

STORE_RETRY_S = 5.0  # while the store is unreadable, try it this often (not on every refresh)

logger = logging.getLogger("flowgate.auth")
_records = msgspec.json.Decoder(dict[str, KeyRecord])


class RedisKeyStore:
    def __init__(self, redis, prefix: str):
        self.redis = redis
        self.hash_key = f"{prefix}keys"
        self.version_key = f"{prefix}keys:version"

    async def version(self) -> str:
        return str(await self.redis.get(self.version_key))

    async def load(self) -> dict[str, KeyRecord]:
        raw = await self.redis.hgetall(self.hash_key)
        return {k.decode(): msgspec.json.decode(v, type=KeyRecord) for k, v in raw.items()}

    async def put(self, record: KeyRecord) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.hash_key, record.key_id, msgspec.json.encode(record))
            pipe.incr(self.version_key)
            await pipe.execute()


class FileKeyStore:
    def __init__(self, path: Path):
        self.path = path

    async def version(self) -> str:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return "none"
        return f"{st.st_mtime_ns}:{st.st_size}:{st.st_ino}"

    async def load(self) -> dict[str, KeyRecord]:
        try:
            return _records.decode(self.path.read_bytes())
        except FileNotFoundError:
            return {}

    async def put(self, record: KeyRecord) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._locked():
            records = await self.load()
            records[record.key_id] = record
            tmp = self.path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(msgspec.json.format(msgspec.json.encode(records)))
            os.replace(tmp, self.path)  # readers see the old file or the new one, never half of one

    @contextlib.contextmanager
    def _locked(self):
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


class KeyCache:
    """The records a replica authenticates against. When the store cannot be read (Redis down), it keeps
    serving the last snapshot, logs once, and retries at the next refresh."""

    def __init__(self, store: RedisKeyStore | FileKeyStore):
        self.store = store
        self.records: dict[str, KeyRecord] = {}
        self._version: str | None = None
        self._checked_at = float("-inf")
        self.store_down = False

    async def get(self) -> dict[str, KeyRecord]:
        now = time.monotonic()
        if now - self._checked_at >= (STORE_RETRY_S if self.store_down else KEY_REFRESH_S):
            self._checked_at = now
            await self._refresh()
        return self.records

    async def _refresh(self) -> None:
        try:
            version = await self.store.version()
            if version != self._version:
                self.records = await self.store.load()
                self._version = version
        except Exception as exc:  # redis ConnectionError, TimeoutError, ...: never fail the request for it
            if not self.store_down:
                logger.error("key store unreadable (%s); serving the last-known keys", type(exc).__name__)
            self.store_down = True
            return
        if self.store_down:
            logger.warning("key store readable again")
        self.store_down = False


async def enroll_embedded_worker(store: RedisKeyStore | FileKeyStore, pepper: bytes) -> str:
    """The embedded worker's key (see keys.embedded_worker_key), its record stored once any key exists: with none,
    authentication is off and storing one would turn it on."""
    key, record = embedded_worker_key(pepper)
    records = await store.load()
    if records and record.key_id not in records:
        await store.put(record)
    return key
