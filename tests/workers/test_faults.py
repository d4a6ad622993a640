"""Nothing lost: faults injected into real processes (gateway, Redis, Celery workers) while jobs run.

After each fault the invariant holds: every accepted line ends exactly once, in results or in errors; the
counts match the outcomes; no job is left unfinished; the ledger's own books balance; no KV block leaked.
Run with `tests/workers/run_faults.sh` (opt-in: e2e)."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
import pytest
import redis

from tests.workers.conftest import MODEL

pytestmark = pytest.mark.e2e


def lines(tag: str, n: int, max_tokens: int = 24) -> list[dict]:
    return [{"custom_id": f"{tag}{i}", "body": {"model": MODEL, "max_tokens": max_tokens, "temperature": 0,
             "messages": [{"role": "user", "content": f"Write about the number {i}"}]}} for i in range(n)]


def http_for(stack) -> httpx.Client:
    return httpx.Client(base_url=stack.url, timeout=60)


def submit(stack, requests, **headers) -> dict:
    response = http_for(stack).post("/v1/jobs", json={"requests": requests}, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


def wait_for(stack, job_id: str, predicate, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        try:
            job = http_for(stack).get(f"/v1/jobs/{job_id}").json()
            if predicate(job):
                return job
        except httpx.TransportError:
            pass  # the gateway is restarting
        assert time.monotonic() < deadline, f"timed out waiting on {job_id}"
        time.sleep(0.3)


def started(stack, job_id: str) -> dict:
    return wait_for(stack, job_id, lambda job: job["counts"]["completed"] >= 1)


def finished(stack, job_id: str) -> dict:
    return wait_for(stack, job_id, lambda job: job["status"] in ("completed", "failed", "cancelled", "expired"))


def check_invariant(stack, job: dict, submitted: list[dict]) -> list[dict]:
    http = http_for(stack)
    raw = http.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"}).text.splitlines()
    outcomes = [json.loads(x) for x in raw if x]
    ids = [o["custom_id"] for o in outcomes]
    assert len(ids) == len(set(ids)), "a line ended twice"
    assert set(ids) == {r["custom_id"] for r in submitted}, "a line was lost"
    failed = sum(1 for o in outcomes if o["error"] is not None)
    assert job["counts"] == {"total": len(submitted), "completed": len(ids) - failed, "failed": failed}
    r = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    record = r.hgetall(f"{stack.prefix}job:{job['id']}")
    assert r.hlen(f"{stack.prefix}job:{job['id']}:out") == int(record.get("completed", 0)) + int(record.get("failed", 0))
    assert job["id"] not in r.smembers(f"{stack.prefix}jobs:active")
    deadline = time.monotonic() + 60
    while True:  # lines a killed worker had in flight finish or get aborted in the engine
        stats = http.get("/ready").json()["engine"]
        if stats["num_running"] == stats["num_waiting"] == stats["kv_blocks_used"] == 0:
            break
        assert time.monotonic() < deadline, f"KV blocks or requests leaked: {stats}"
        time.sleep(0.5)
    return outcomes


def test_worker_sigkilled_mid_chunk(stack):
    requests = lines("k", 16)
    job = submit(stack, requests)
    started(stack, job["id"])
    stack.kill_worker(stack.workers[-1])
    stack.start_worker()
    job = finished(stack, job["id"])
    assert job["status"] == "completed"
    assert all(o["error"] is None for o in check_invariant(stack, job, requests))


def test_redis_restarted_mid_job(stack):
    requests = lines("r", 16)
    job = submit(stack, requests)
    started(stack, job["id"])
    stack.redis.kill()  # SIGKILL: only what the AOF holds survives
    time.sleep(2)
    stack.redis.start()
    job = finished(stack, job["id"])
    assert job["status"] == "completed"
    assert all(o["error"] is None for o in check_invariant(stack, job, requests))


def test_gateway_restarted_mid_job(stack):
    requests = lines("g", 16)
    job = submit(stack, requests)
    started(stack, job["id"])
    stack.stop_gateway(signal.SIGTERM)
    time.sleep(1)
    stack.start_gateway()
    job = finished(stack, job["id"])
    assert job["status"] == "completed"
    assert all(o["error"] is None for o in check_invariant(stack, job, requests))


def test_duplicate_submits_with_one_idempotency_key(stack):
    requests = lines("d", 6, max_tokens=4)
    replies: list[dict] = []

    def post() -> None:
        replies.append(submit(stack, requests, **{"Idempotency-Key": "dup-1"}))

    threads = [threading.Thread(target=post) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({reply["id"] for reply in replies}) == 1
    job = finished(stack, replies[0]["id"])
    check_invariant(stack, job, requests)
    listed = http_for(stack).get("/v1/jobs", params={"limit": 100}).json()["data"]
    assert sum(1 for j in listed if j["counts"]["total"] == 6 and j["id"] == job["id"]) == 1


def test_cancel_mid_job(stack):
    requests = lines("c", 24, max_tokens=32)
    job = submit(stack, requests)
    started(stack, job["id"])
    assert http_for(stack).post(f"/v1/jobs/{job['id']}/cancel").status_code == 200
    job = finished(stack, job["id"])
    assert job["status"] == "cancelled"
    outcomes = check_invariant(stack, job, requests)
    assert any(o["error"] and o["error"]["code"] == "batch_cancelled" for o in outcomes)
    assert any(o["error"] is None for o in outcomes)


def test_poison_line_ends_as_an_error_and_spares_the_rest(stack):
    requests = lines("p", 8, max_tokens=4)
    requests.insert(3, {"custom_id": "poison", "body": requests[0]["body"]})
    job = finished(stack, submit(stack, requests)["id"])
    assert job["status"] == "completed"
    outcomes = {o["custom_id"]: o for o in check_invariant(stack, job, requests)}
    assert outcomes["poison"]["error"]["code"] == "line_crashed_worker"
    assert all(o["error"] is None for cid, o in outcomes.items() if cid != "poison")
    assert all(worker.poll() is None for worker in stack.workers[-1:]), "the worker survives its children"
