"""One real `flowgate serve` process for the whole gateway suite: the bundled model, a small KV budget,
a short context window (so context-length errors are cheap to provoke) and a 1 MiB body limit."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m"
MAX_MODEL_LEN = 1024
MAX_BODY_BYTES = 1 << 20
STARTUP_TIMEOUT_S = 300.0


@dataclass
class Server:
    url: str
    process: subprocess.Popen
    log_path: Path

    def stats(self) -> dict:
        response = httpx.get(f"{self.url}/ready", timeout=60)
        assert response.status_code == 200, response.text
        return response.json()["engine"]

    def wait_idle(self, timeout: float = 30.0) -> dict:
        """The engine's stats once nothing runs or waits (requests finish or get aborted)."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["num_running"] == 0 and stats["num_waiting"] == 0:
                return stats
            if time.monotonic() > deadline:
                raise AssertionError(f"engine still busy after {timeout:.0f} s: {stats}")
            time.sleep(0.1)

    def log_tail(self, num_chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-num_chars:]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    log_path = tmp_path_factory.mktemp("gateway") / "server.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOWGATE_KV_CACHE_BYTES": str(64 << 20),
        "FLOWGATE_MAX_MODEL_LEN": str(MAX_MODEL_LEN),
        "FLOWGATE_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
        "FLOWGATE_LOG_LEVEL": "warning",
        # Open mode (no keys) whatever keys the machine's $FLOWGATE_HOME holds; keyed servers: test_auth_*.
        "FLOWGATE_KEYS_FILE": str(log_path.parent / "keys.json"),
        # The embedded Redis (AOF) and bulk files of this session, apart from every other test session's.
        "FLOWGATE_BULK_DIR": str(log_path.parent / "bulk"),
        "FLOWGATE_REDIS_URL": "",  # bulk jobs on the embedded Redis and worker `flowgate serve` starts
        "FLOWGATE_WEBHOOK_ALLOW_HOSTS": "127.0.0.1",  # job webhooks may reach a receiver in the test
    }
    with running_server(log_path, env) as server:
        yield server


@contextlib.contextmanager
def running_server(log_path: Path, env: dict[str, str]) -> Iterator[Server]:
    """`flowgate serve` on a free port with exactly `env`, ready; stopped (SIGINT, then SIGKILL) on exit."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-c", "from gateway.cli import app; app()", "serve", "--port", str(port)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    server = Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_ready(server: Server) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"the server exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/ready", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    pytest.fail(f"the server was not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def async_client(server):
    from openai import AsyncOpenAI

    return AsyncOpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as http:
        yield http
