"""Tier logic that needs no server: the fair queue, rate-limit rules in memory and in Redis (real, namespaced),
priority / service-tier resolution, key hashing, the first-turn tool policy."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from engine.protocol import GenerateRequest, SamplingParams
from gateway.admission import TierGate
from gateway.auth.config import AuthConfig
from gateway.auth.keys import KeyRecord, Limits, hash_key, mint, verify
from gateway.auth.limits import RateLimiter
from gateway.auth.policy import default_tool_choice
from gateway.errors import RateLimited
from gateway.schemas.chat import ChatMessage
from gateway.schemas.tools import ChatTool, FunctionDefinition

PEPPER = b"pepper"
REDIS_URL = "redis://127.0.0.1:6379/0"


def test_key_verification_is_exact_and_rejects_revoked():
    key, record = mint(PEPPER, "free")
    records = {record.key_id: record}
    assert verify(PEPPER, key, records) is record
    assert verify(b"other pepper", key, records) is None
    assert verify(PEPPER, key[:-1] + ("0" if key[-1] != "0" else "1"), records) is None
    assert verify(PEPPER, "garbage", records) is None
    records[record.key_id] = KeyRecord(**{**_fields(record), "enabled": False})
    assert verify(PEPPER, key, records) is None
    assert record.key_hash == hash_key(PEPPER, key) and key not in record.key_hash


def _fields(record):
    return {f: getattr(record, f) for f in record.__struct_fields__}


async def test_fair_queue_serves_the_least_served_key_first():
    gate = TierGate("free", inflight=1, queue=100, timeout_s=30)
    order = []

    async def request(key, cost=10):
        await gate.acquire(key, cost)
        order.append(key)
        await asyncio.sleep(0)
        gate.release(key, cost, cost)

    await gate.acquire("hog", 10)  # holds the only slot while the queue forms
    tasks = [asyncio.ensure_future(request("hog")) for _ in range(6)]
    await asyncio.sleep(0)
    tasks += [asyncio.ensure_future(request("polite")) for _ in range(2)]
    await asyncio.sleep(0)
    gate.release("hog", 10, 10)
    await asyncio.gather(*tasks)
    # The polite key's two requests are not stuck behind the hog's six.
    assert order.index("polite") <= 2 and [i for i, k in enumerate(order) if k == "polite"][1] <= 4


async def test_full_queue_pushes_out_the_heaviest_key():
    gate = TierGate("free", inflight=1, queue=4, timeout_s=30)
    await gate.acquire("hog", 1)
    hog = [asyncio.ensure_future(gate.acquire("hog", 1)) for _ in range(4)]
    await asyncio.sleep(0)
    with pytest.raises(RateLimited):
        await gate.acquire("hog", 1)  # the hog's own fifth waiter is refused outright
    polite = asyncio.ensure_future(gate.acquire("polite", 1))
    await asyncio.sleep(0.01)
    refused = [t for t in hog if t.done()]
    assert len(refused) == 1 and isinstance(refused[0].exception(), RateLimited)
    assert refused[0].exception().headers["retry-after"] == "1"
    gate.release("hog", 1, 1)
    await polite  # the newcomer gets the slot ahead of the hog's remaining waiters
    for task in hog:
        task.cancel()
    await asyncio.gather(*hog, return_exceptions=True)
    assert gate.num_waiting == 0 and gate.inflight == 1


async def test_queue_timeout_is_a_429_and_leaks_nothing():
    gate = TierGate("free", inflight=1, queue=4, timeout_s=0.05)
    await gate.acquire("a", 1)
    with pytest.raises(RateLimited, match="waited"):
        await gate.acquire("b", 1)
    gate.release("a", 1, 1)
    assert gate.inflight == 0 and gate.num_waiting == 0


@pytest.fixture(params=["memory", "redis"])
def limiter(request):
    if request.param == "memory":
        yield RateLimiter()
        return
    import redis
    import redis.asyncio

    prefix = f"fgtest:{uuid.uuid4().hex}:"
    yield RateLimiter(redis.asyncio.Redis.from_url(REDIS_URL), prefix)
    with redis.Redis.from_url(REDIS_URL) as sync:
        keys = list(sync.scan_iter(match=f"{prefix}*"))
        assert keys  # the test did write through Redis
        sync.delete(*keys)


async def test_rate_limits_requests_tokens_and_concurrency(limiter):
    limits = Limits(rpm=3, tpm=100, max_concurrent=2)

    async def admit(tokens=10, count=True):
        return await limiter.admit("k", limits, tokens=tokens, count_request=count, take_concurrency=count)

    t1, headers = await admit()
    assert headers["x-ratelimit-remaining-requests"] == "2" and headers["x-ratelimit-remaining-tokens"] == "90"
    _t2, _ = await admit()
    with pytest.raises(RateLimited, match="concurrent") as exc:
        await admit()
    assert exc.value.headers["retry-after"] == "1"
    await limiter.release(t1, used_tokens=4)  # 6 reserved tokens come back, and the concurrency slot
    _t3, headers = await admit(tokens=10)
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-remaining-tokens"] == str(100 - 4 - 10 - 10)
    with pytest.raises(RateLimited, match="requests per minute") as exc:
        await admit()
    assert int(exc.value.headers["retry-after"]) >= 1
    assert exc.value.headers["x-ratelimit-limit-requests"] == "3"
    with pytest.raises(RateLimited, match="tokens per minute"):
        await admit(tokens=90, count=False)


async def test_limiter_falls_back_to_memory_when_redis_is_down():
    from gateway.auth.service import redis_client

    dead = redis_client("redis://127.0.0.1:1/0")
    limiter = RateLimiter(dead, "fgtest:dead:")
    ticket, _ = await limiter.admit("k", Limits(rpm=1), tokens=1, count_request=True, take_concurrency=False)
    assert not ticket.in_redis
    with pytest.raises(RateLimited):
        await limiter.admit("k", Limits(rpm=1), tokens=1, count_request=True, take_concurrency=False)
    await dead.aclose()


class _Tiers:
    def __init__(self):
        self.config = AuthConfig()


def test_body_priority_cannot_raise_a_free_request():
    from gateway.tiering import TieredEngine

    _key, record = mint(PEPPER, "free", limits=Limits(max_tokens=64))
    engine = TieredEngine(None, _Tiers(), record, record.identity, {})
    req = GenerateRequest(request_id="r", prompt="x", priority=-1000, params=SamplingParams(max_tokens=8))
    policed = engine._policed(req)
    assert policed.priority == 1 and policed.cache_salt == f"key:{record.key_id}"
    assert engine._policed(GenerateRequest(request_id="r", prompt="x", priority=7)).priority == 7  # lowering is fine


@pytest.mark.parametrize(("key_tier", "asked", "used"), [
    ("free", "priority", "default"), ("free", "auto", "default"), ("free", None, "default"),
    ("free", "flex", "flex"), ("paid", "priority", "priority"), ("paid", "auto", "priority"),
    ("paid", "default", "default"), ("batch", "priority", "flex"),
])
def test_service_tier_never_above_the_keys_tier(key_tier, asked, used):
    from gateway.schemas.chat import ChatCompletionRequest
    from gateway.tiering import TieredEngine

    _, record = mint(PEPPER, key_tier)
    body = ChatCompletionRequest(model="m", messages=[ChatMessage(role="user", content="x")], service_tier=asked)
    assert TieredEngine(None, _Tiers(), record, record.identity, {}).bind(body).service_tier == used


def test_required_first_turn_policy():
    tools = [ChatTool(type="function", function=FunctionDefinition(name="f"))]
    first = [ChatMessage(role="user", content="x")]
    later = [*first, ChatMessage(role="tool", content="42", tool_call_id="c")]
    assert default_tool_choice(None, tools, first, "required_first_turn") == "required"
    assert default_tool_choice("auto", tools, first, "required_first_turn") == "required"
    assert default_tool_choice("none", tools, first, "required_first_turn") == "none"
    assert default_tool_choice(None, tools, later, "required_first_turn") is None
    assert default_tool_choice(None, None, first, "required_first_turn") is None
    assert default_tool_choice(None, tools, first, "auto") is None


async def test_a_request_that_would_wait_too_long_is_refused_at_once():
    gate = TierGate("free", inflight=1, queue=100, timeout_s=30, max_wait_s=1.0)
    gate.mean_service_s = 0.6  # as measured from recent requests
    started = await gate.acquire("a", 1)
    first = asyncio.ensure_future(gate.acquire("b", 1))  # projected wait 0.6 s: queued
    await asyncio.sleep(0.01)
    t0 = time.monotonic()
    with pytest.raises(RateLimited, match="capacity"):
        await gate.acquire("c", 1)  # projected 1.2 s: refused now, not after a timeout
    assert time.monotonic() - t0 < 0.1
    gate.release("a", 1, 1, started)
    await first
    assert gate.mean_service_s < 0.6
