"""The job ledger in Redis: the one truth about every job (Celery's messages are only hints to do work).

Keys (all under the configured prefix P):

| key                  | type | holds                                                          |
|----------------------|------|----------------------------------------------------------------|
| P job:ID             | hash | the Job record; `completed`/`failed` change only in OUTCOME_LUA |
| P job:ID:in          | list | the accepted input lines (InputLine), chunk k = [k*size, ...)  |
| P job:ID:out         | hash | custom_id -> Outcome, written once (HSETNX)                    |
| P job:ID:order       | list | custom_ids in the order their outcomes landed (result paging)  |
| P job:ID:pos         | hash | custom_id -> its 1-based position in :order (`after` cursors)  |
| P job:ID:crashes     | hash | custom_id -> runs started and never returned (poison detection) |
| P jobs:FACE:OWNER    | zset | the owner's jobs (or batches) by submission sequence (listing) |
| P jobs:active        | set  | ids of jobs not yet terminal (recovery sweeps them)            |
| P queued:OWNER       | int  | the owner's accepted lines without an outcome (per-key cap)    |
| P idem:OWNER:KEY     | hash | Idempotency-Key -> job id and body digest (24 h)               |

Invariant: for every job, HLEN(out) == completed + failed <= total, and a custom_id has at most one outcome.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable

import msgspec
import redis
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from workers.config import WorkerSettings
from workers.records import ACTIVE, InputLine, Job, Outcome, job_from_hash, job_to_hash

# ARGV: prefix, now, then (custom_id, outcome json, counter) triples. Returns lines still without an outcome.
OUTCOME_LUA = """
local owner = redis.call('HGET', KEYS[1], 'owner')
if not owner then return -1 end
local written = 0
for i = 3, #ARGV, 3 do
  if redis.call('HSETNX', KEYS[2], ARGV[i], ARGV[i + 1]) == 1 then
    local pos = redis.call('RPUSH', KEYS[3], ARGV[i])
    redis.call('HSET', KEYS[4], ARGV[i], pos)
    redis.call('HDEL', KEYS[5], ARGV[i])
    redis.call('HINCRBY', KEYS[1], ARGV[i + 2], 1)
    written = written + 1
  end
end
if written > 0 then
  redis.call('DECRBY', ARGV[1] .. 'queued:' .. owner, written)
  redis.call('HSET', KEYS[1], 'updated_at', ARGV[2])
end
return tonumber(redis.call('HGET', KEYS[1], 'total')) - redis.call('HLEN', KEYS[2])
"""

# ARGV: new status, timestamp field, now, allowed old statuses... Returns the old status, or false.
TRANSITION_LUA = """
local old = redis.call('HGET', KEYS[1], 'status')
if not old then return false end
for i = 4, #ARGV do
  if old == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], ARGV[2], ARGV[3], 'updated_at', ARGV[3])
    if ARGV[1] == 'completed' or ARGV[1] == 'failed' or ARGV[1] == 'cancelled' or ARGV[1] == 'expired' then
      redis.call('SREM', KEYS[2], redis.call('HGET', KEYS[1], 'id'))
    end
    return old
  end
end
return false
"""

# KEYS: queued counter. ARGV: lines, cap. Reserves the lines under the owner's cap, or returns -1.
RESERVE_LUA = """
local now = tonumber(redis.call('GET', KEYS[1]) or '0')
if now + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return -1 end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""

_clients: dict[tuple[int, str, bool], redis.Redis] = {}


def client(settings: WorkerSettings, *, patient: bool = True) -> redis.Redis:
    """One connection pool per process (a forked worker child must not share its parent's sockets).

    `patient` (workers): commands retry for about two minutes, through a Redis restart (the AOF brings the data
    back), instead of failing the task. Otherwise (the gateway) they give up within a second or two, and the
    client gets a 503 rather than a hanging request."""
    key = (os.getpid(), settings.redis_url, patient)
    if key not in _clients:
        retry = Retry(ExponentialBackoff(cap=4, base=0.2), 40) if patient else Retry(ExponentialBackoff(1, 0.1), 3)
        _clients[key] = redis.Redis.from_url(
            settings.redis_url, decode_responses=True, socket_timeout=30 if patient else 10,
            socket_connect_timeout=5, health_check_interval=30, retry=retry,
            retry_on_error=[redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError],
        )
    return _clients[key]


def page_top(r: redis.Redis, key: str, after: str | None) -> str | None:
    """Where a newest-first page of a sorted-set index starts: everything older than `after` (an id from the
    previous page), or all of it; None when `after` is not in the index."""
    if after is None:
        return "+inf"
    score = r.zscore(key, after)
    return None if score is None else f"({int(score)}"


def now() -> int:
    return int(time.time())


class Ledger:
    def __init__(self, settings: WorkerSettings, *, patient: bool = True):
        self.settings = settings
        self.p = settings.prefix
        self.r = client(settings, patient=patient)
        self._outcome = self.r.register_script(OUTCOME_LUA)
        self._transition = self.r.register_script(TRANSITION_LUA)
        self._reserve = self.r.register_script(RESERVE_LUA)

    def _k(self, job_id: str, part: str = "") -> str:
        return f"{self.p}job:{job_id}{':' + part if part else ''}"

    # -- creating and reading jobs -------------------------------------------------------------------------

    def reserve_lines(self, owner: str, num_lines: int) -> bool:
        return self._reserve(keys=[f"{self.p}queued:{owner}"],
                             args=[num_lines, self.settings.max_queued_lines_per_key]) != -1

    def release_lines(self, owner: str, num_lines: int) -> None:
        self.r.decrby(f"{self.p}queued:{owner}", num_lines)

    def claim_idempotency_key(self, owner: str, key: str, job_id: str, digest: str) -> tuple[str, str] | None:
        """Bind key -> (job_id, digest) unless bound already; returns the earlier binding if there is one."""
        name = f"{self.p}idem:{owner}:{key}"
        if self.r.hsetnx(name, "job_id", job_id):
            self.r.hset(name, "digest", digest)
            self.r.expire(name, 24 * 3600)
            return None
        for _ in range(50):  # the winner writes its digest right after its claim
            earlier = self.r.hmget(name, "job_id", "digest")
            if earlier[1] is not None:
                return earlier[0], earlier[1]
            time.sleep(0.02)
        return earlier[0], ""

    def create(self, job: Job, lines: list[InputLine]) -> None:
        """Writes the record and input lines, then makes the job visible (listing, recovery) in one step."""
        enc = msgspec.json.encode
        with self.r.pipeline(transaction=False) as pipe:
            for start in range(0, len(lines), 1000):
                pipe.rpush(self._k(job.id, "in"), *[enc(line) for line in lines[start:start + 1000]])
            pipe.execute()
        seq = self.r.incr(f"{self.p}jobs:seq")
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(self._k(job.id), mapping=job_to_hash(job) | {"updated_at": str(now()), "seq": str(seq)})
            pipe.zadd(f"{self.p}jobs:{job.face}:{job.owner}", {job.id: seq})
            if job.status in ACTIVE:
                pipe.sadd(f"{self.p}jobs:active", job.id)
            pipe.execute()

    def get(self, job_id: str) -> Job | None:
        raw = self.r.hgetall(self._k(job_id))
        if not raw:
            return None
        raw.pop("seq", None)
        return job_from_hash(raw)

    def update(self, job_id: str, **fields: str) -> None:
        self.r.hset(self._k(job_id), mapping=fields)

    def list_jobs(self, owner: str, face: str, *, after: str | None, limit: int) -> tuple[list[Job], bool]:
        """The owner's jobs of one face, newest first; `after` is the last id of the previous page."""
        key = f"{self.p}jobs:{face}:{owner}"
        top = page_top(self.r, key, after)
        if top is None:
            return [], False
        ids = self.r.zrevrangebyscore(key, top, "-inf", start=0, num=limit + 1)
        jobs = [job for job in (self.get(i) for i in ids[:limit]) if job is not None]
        return jobs, len(ids) > limit

    def active_ids(self) -> list[str]:
        return sorted(self.r.smembers(f"{self.p}jobs:active"))

    # -- lines and outcomes --------------------------------------------------------------------------------

    def chunk_lines(self, job: Job, chunk_no: int) -> list[InputLine]:
        start = chunk_no * job.chunk_size
        raw = self.r.lrange(self._k(job.id, "in"), start, start + job.chunk_size - 1)
        return [msgspec.json.decode(item, type=InputLine) for item in raw]

    def all_lines(self, job: Job) -> Iterable[tuple[int, InputLine]]:
        for chunk_no in range(job.num_chunks):
            for line in self.chunk_lines(job, chunk_no):
                yield chunk_no, line

    def has_outcomes(self, job_id: str, custom_ids: list[str]) -> list[bool]:
        if not custom_ids:
            return []
        return [bool(v) for v in self.r.hmget(self._k(job_id, "out"), custom_ids)]

    def record(self, job_id: str, outcomes: list[Outcome]) -> int:
        """Write each line's outcome unless it has one; returns how many lines are still without one."""
        args: list = [self.p, now()]
        for outcome in outcomes:
            args += [outcome.custom_id, msgspec.json.encode(outcome), "completed" if outcome.ok else "failed"]
        keys = [self._k(job_id), *(self._k(job_id, part) for part in ("out", "order", "pos", "crashes"))]
        return self._outcome(keys=keys, args=args)

    def remaining(self, job: Job) -> int:
        return job.total - self.r.hlen(self._k(job.id, "out"))

    def outcomes_page(self, job_id: str, *, after: str | None, limit: int) -> tuple[list[Outcome], bool]:
        """Outcomes in the order they were recorded; `after` is the last custom_id of the previous page. An
        `after` without an outcome is an empty last page (as for job lists), never a restart from the top."""
        start = 0
        if after is not None:
            pos = self.r.hget(self._k(job_id, "pos"), after)
            if pos is None:
                return [], False
            start = int(pos)
        ids = self.r.lrange(self._k(job_id, "order"), start, start + limit)
        page = ids[:limit]
        raw = self.r.hmget(self._k(job_id, "out"), page) if page else []
        return [msgspec.json.decode(item, type=Outcome) for item in raw if item], len(ids) > limit

    def all_outcomes(self, job_id: str) -> Iterable[Outcome]:
        for _, raw in self.r.hscan_iter(self._k(job_id, "out"), count=1000):
            yield msgspec.json.decode(raw, type=Outcome)

    def started_line(self, job_id: str, custom_id: str) -> int:
        """Count a run of the line before it starts; `returned_line` undoes it. What stays counted crashed."""
        return self.r.hincrby(self._k(job_id, "crashes"), custom_id, 1)

    def returned_line(self, job_id: str, custom_id: str) -> None:
        self.r.hincrby(self._k(job_id, "crashes"), custom_id, -1)

    def crash_counts(self, job_id: str, custom_ids: list[str]) -> list[int]:
        if not custom_ids:
            return []
        return [int(v or 0) for v in self.r.hmget(self._k(job_id, "crashes"), custom_ids)]

    # -- status --------------------------------------------------------------------------------------------

    def transition(self, job_id: str, to: str, *, allowed: Iterable[str]) -> str | None:
        """Move the job to `to` if its status is one of `allowed` (atomic); the old status, or None."""
        args = [to, f"{to}_at", now(), *allowed]
        return self._transition(keys=[self._k(job_id), f"{self.p}jobs:active"], args=args) or None
