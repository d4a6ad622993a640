"""The event loop never waits on the model, and a client that leaves takes its engine work with it."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.gateway.conftest import MODEL

LONG = {"model": MODEL, "messages": [{"role": "user", "content": "Tell me a long story."}], "max_tokens": 400,
        "temperature": 0.7, "seed": 1}


def wait_running(server, at_least: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while server.stats()["num_running"] < at_least:
        assert time.monotonic() < deadline, server.stats()
        time.sleep(0.05)


def hold_stream(server, release: threading.Event) -> None:
    with httpx.Client(base_url=server.url, timeout=60) as http, \
            http.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as response:
        lines = response.iter_lines()  # kept: dropping the iterator would close the connection
        assert next(lines).startswith("data: ")
        release.wait()


def test_health_stays_fast_while_the_engine_is_saturated(server):
    release = threading.Event()
    with ThreadPoolExecutor(4) as pool:
        streams = [pool.submit(hold_stream, server, release) for _ in range(4)]
        try:
            wait_running(server, at_least=4)
            latencies = []
            with httpx.Client(base_url=server.url, timeout=10) as probe:
                for _ in range(20):
                    start = time.perf_counter()
                    assert probe.get("/health").status_code == 200
                    latencies.append(time.perf_counter() - start)
            assert server.stats()["num_running"] == 4  # still saturated after the probes
        finally:
            release.set()
        for stream in streams:
            stream.result()
    assert statistics.median(latencies) < 0.1, latencies
    assert max(latencies) < 1.0, latencies
    server.wait_idle(timeout=15)


def test_closing_a_stream_aborts_its_request(server):
    with httpx.Client(base_url=server.url, timeout=60) as http, \
            http.stream("POST", "/v1/chat/completions", json={**LONG, "stream": True}) as response:
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        wait_running(server, at_least=1)
    stats = server.wait_idle(timeout=10)  # 400 tokens would take far longer than this
    assert stats["kv_blocks_used"] == 0


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_a_client_timing_out_on_a_non_streaming_request_aborts_it(server, path):
    body = LONG if path.endswith("chat/completions") else {**LONG, "prompt": "Once upon a time"}

    def post():
        with httpx.Client(base_url=server.url, timeout=3) as http:
            http.post(path, json=body)

    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(post)
        wait_running(server, at_least=1)
        with pytest.raises(httpx.ReadTimeout):
            pending.result()
    stats = server.wait_idle(timeout=10)  # 400 tokens would take far longer than this
    assert stats["kv_blocks_used"] == 0
