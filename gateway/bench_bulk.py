"""`flowgate bench bulk`: what bulk jobs cost and what they leave for paid traffic, in one run.

One `flowgate serve` on a private Redis with one gateway-backed worker (one chunk at a time, `--bulk-in-flight`
of its lines at once). Phases, in order:
  paid alone      a trickle of paid streaming chats; TTFT per request
  bulk + paid     N lines through /v1/jobs (batch priority) with the same trickle alongside
  online          the same N lines as concurrent online requests
  local           the same N lines through a `flowgate worker --engine local` (the gateway's engine idle)
Printed: lines/s and output tokens/s per path, ratios to online, paid p99 TTFT with bulk vs alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

from gateway.bench_support import free_port, wait_ready
from gateway.embedded import start_redis

READY_TIMEOUT_S = 600.0
PAID_INTERVAL_S = 0.5


def run(model: str, num_lines: int, max_tokens: int, concurrency: int, num_paid: int, as_json: bool,
        bulk_in_flight: int = 8) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="flowgate-bench-bulk-"))
    redis, redis_url = start_redis(tmp / "redis")
    port = free_port()
    env = {**os.environ, "FLOWGATE_REDIS_URL": redis_url, "FLOWGATE_BULK_PREFIX": f"bench:{uuid.uuid4().hex[:8]}:",
           "FLOWGATE_BULK_DIR": str(tmp), "FLOWGATE_GATEWAY_URL": f"http://127.0.0.1:{port}",
           "FLOWGATE_LOG_LEVEL": "warning", "FLOWGATE_MODEL": model,
           "FLOWGATE_BULK_LINE_CONCURRENCY": str(bulk_in_flight)}
    cli = [sys.executable, "-c", "from gateway.cli import app; app()"]
    procs = [subprocess.Popen([*cli, "serve", "--port", str(port)], env=env)]
    try:
        procs.append(subprocess.Popen([*cli, "worker", "--loglevel", "warning", "--concurrency", "1"], env=env,
                                      start_new_session=True))
        result = asyncio.run(_measure(f"http://127.0.0.1:{port}", model, num_lines, max_tokens, concurrency,
                                      num_paid, cli, env, procs))
    finally:
        for proc in reversed(procs):
            _stop(proc)
        _stop(redis)
        shutil.rmtree(tmp, ignore_errors=True)
    if as_json:
        print(json.dumps(result))
    else:
        _print(result)
    return result


async def _measure(url, model, num_lines, max_tokens, concurrency, num_paid, cli, env, procs) -> dict:
    lines = [{"custom_id": f"l{i}", "body": {"model": model, "max_tokens": max_tokens, "temperature": 0,
              "messages": [{"role": "user", "content": f"Describe product number {i}."}]}}
             for i in range(num_lines)]
    async with httpx.AsyncClient(base_url=url, timeout=READY_TIMEOUT_S) as http:
        await wait_ready(http, procs[0], READY_TIMEOUT_S)
        await _paid_ttfts(http, model, 3)  # warm up
        alone = await _paid_ttfts(http, model, num_paid)
        with_bulk: list[float] = []
        paid = asyncio.create_task(_paid_ttfts(http, model, num_paid, into=with_bulk, forever=True))
        bulk_s, bulk_tokens = await _run_job(http, lines)
        paid.cancel()
        await asyncio.gather(paid, return_exceptions=True)
        online_s, online_tokens = await _online(http, lines, concurrency)
        # The local worker takes the queue alone: the gateway's own worker stops first.
        _stop(procs[1])
        procs.append(subprocess.Popen([*cli, "worker", "--engine", "local", "--loglevel", "warning"], env=env,
                                      start_new_session=True))
        await _run_job(http, lines[:1])  # the local worker loads its engine on its first chunk: not timed
        local_s, local_tokens = await _run_job(http, lines)
    alone_p99, bulk_p99 = _p99(alone), _p99(with_bulk)
    return {
        "lines": num_lines, "max_tokens": max_tokens, "online_concurrency": concurrency,
        "bulk_in_flight": int(env["FLOWGATE_BULK_LINE_CONCURRENCY"]),
        "bulk_lines_per_s": num_lines / bulk_s, "bulk_tokens_per_s": bulk_tokens / bulk_s,
        "local_lines_per_s": num_lines / local_s, "local_tokens_per_s": local_tokens / local_s,
        "online_lines_per_s": num_lines / online_s, "online_tokens_per_s": online_tokens / online_s,
        "bulk_vs_online": online_s / bulk_s, "local_vs_online": online_s / local_s,
        "paid_requests_alone": len(alone), "paid_requests_with_bulk": len(with_bulk),
        "paid_p99_ttft_alone_ms": alone_p99 * 1e3, "paid_p99_ttft_with_bulk_ms": bulk_p99 * 1e3,
        "paid_ttft_ratio": bulk_p99 / alone_p99, "paid_ttft_floor_met": bulk_p99 / alone_p99 <= 1.5,
    }


async def _paid_ttfts(http: httpx.AsyncClient, model: str, count: int, *, into: list[float] | None = None,
                      forever: bool = False) -> list[float]:
    """Paid streaming chats one after another (every PAID_INTERVAL_S); time to the first content token."""
    ttfts = into if into is not None else []
    while forever or len(ttfts) < count:
        body = {"model": model, "max_tokens": 8, "stream": True, "priority": 0,
                "messages": [{"role": "user", "content": "Quick: name a color."}]}
        start = time.perf_counter()
        first = None
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            async for raw in response.aiter_lines():
                if first is None and raw.startswith("data: ") and '"content":"' in raw:
                    first = time.perf_counter() - start
        if first is not None:
            ttfts.append(first)
        await asyncio.sleep(PAID_INTERVAL_S)
    return ttfts


async def _run_job(http: httpx.AsyncClient, lines: list[dict]) -> tuple[float, int]:
    start = time.perf_counter()
    job = (await http.post("/v1/jobs", json={"requests": lines})).json()
    while job["status"] not in ("completed", "failed", "cancelled", "expired"):
        await asyncio.sleep(0.25)
        job = (await http.get(f"/v1/jobs/{job['id']}")).json()
    elapsed = time.perf_counter() - start
    assert job["status"] == "completed" and job["counts"]["failed"] == 0, job
    results = (await http.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"})).text.splitlines()
    tokens = sum(json.loads(x)["response"]["body"]["usage"]["completion_tokens"] for x in results if x)
    return elapsed, tokens


async def _online(http: httpx.AsyncClient, lines: list[dict], concurrency: int) -> tuple[float, int]:
    gate = asyncio.Semaphore(concurrency)

    async def one(line: dict) -> int:
        async with gate:
            response = await http.post("/v1/chat/completions", json=line["body"])
            response.raise_for_status()
            return response.json()["usage"]["completion_tokens"]

    start = time.perf_counter()
    tokens = sum(await asyncio.gather(*(one(line) for line in lines)))
    return time.perf_counter() - start, tokens


def _p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))] if ordered else float("nan")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _print(r: dict) -> None:
    print(f"{r['lines']} lines x {r['max_tokens']} tokens")
    for name in ("bulk", "local", "online"):
        print(f"  {name:<7} {r[f'{name}_lines_per_s']:8.2f} lines/s  {r[f'{name}_tokens_per_s']:8.1f} tokens/s")
    print(f"  bulk / online {r['bulk_vs_online']:.2f}x   local / online {r['local_vs_online']:.2f}x")
    print(f"  paid p99 TTFT: alone {r['paid_p99_ttft_alone_ms']:.0f} ms, with bulk "
          f"{r['paid_p99_ttft_with_bulk_ms']:.0f} ms ({r['paid_ttft_ratio']:.2f}x; floor 1.5x "
          f"{'met' if r['paid_ttft_floor_met'] else 'NOT met'})")
