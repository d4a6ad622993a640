"""The benches' shared server wait: ready as soon as /ready answers 200, a dead server fails at once."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time

import httpx
import pytest

from gateway.bench_support import free_port, wait_ready


class _Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ready" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


async def test_returns_once_ready():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), _Ready)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.server_port}") as http_client:
            await wait_ready(http_client, None, timeout_s=10)
    finally:
        server.shutdown()


async def test_a_server_that_exits_fails_at_once():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    start = time.monotonic()
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{free_port()}") as http_client:
        with pytest.raises(RuntimeError, match="exited with 0"):
            await wait_ready(http_client, process, timeout_s=30)
    assert time.monotonic() - start < 5
