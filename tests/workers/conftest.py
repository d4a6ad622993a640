"""Real parts for the bulk path: a Redis of our own (when it must be killed), the shared one otherwise
(every key under a per-session prefix, deleted afterwards), gateways and Celery workers as processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import redis

from tests.gateway.conftest import MODEL, ROOT, free_port

SHARED_REDIS = os.environ.get("FLOWGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def delete_prefix(url: str, prefix: str) -> None:
    r = redis.Redis.from_url(url)
    for key in r.scan_iter(match=f"{prefix}*", count=1000):
        r.delete(key)


@pytest.fixture
def worker_settings(tmp_path):
    """WorkerSettings on the shared Redis under a unique prefix; its keys are deleted afterwards."""
    from workers.config import WorkerSettings

    prefix = f"fgtest:{uuid.uuid4().hex[:12]}:"
    settings = WorkerSettings(redis_url=SHARED_REDIS, prefix=prefix, queue=prefix + "bulk",
                              webhook_queue=prefix + "hooks", home=tmp_path, chunk_size=2)
    yield settings
    delete_prefix(SHARED_REDIS, prefix)


class RedisServer:
    """A redis-server of the test's own (AOF fsynced on every write), so it can be killed and restarted."""

    def __init__(self, directory: Path):
        self.dir = directory
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while True:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except (redis.ConnectionError, redis.BusyLoadingError):
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.1)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()


@dataclass
class Stack:
    """`flowgate serve` on an external Redis (the scale-out path) plus `celery worker` processes."""

    tmp: Path
    redis: RedisServer
    prefix: str = field(default_factory=lambda: f"fgfault:{uuid.uuid4().hex[:10]}:")
    port: int = field(default_factory=free_port)
    gateway: subprocess.Popen | None = None
    workers: list[subprocess.Popen] = field(default_factory=list)
    crash_on: str = "poison"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict:
        return {
            **os.environ, "PYTHONPATH": str(ROOT),
            "FLOWGATE_REDIS_URL": self.redis.url, "FLOWGATE_BULK_PREFIX": self.prefix,
            "FLOWGATE_BULK_QUEUE": self.prefix + "bulk", "FLOWGATE_WEBHOOK_QUEUE": self.prefix + "hooks",
            "FLOWGATE_BULK_DIR": str(self.tmp / "bulk"), "FLOWGATE_GATEWAY_URL": self.url,
            "FLOWGATE_BULK_CHUNK_SIZE": "4", "FLOWGATE_BULK_LINE_CONCURRENCY": "4",
            "FLOWGATE_BULK_VISIBILITY_TIMEOUT": "20", "FLOWGATE_BULK_STALL_S": "20",
            "FLOWGATE_BULK_RECOVERY_INTERVAL_S": "2", "FLOWGATE_TEST_CRASH_ON_CUSTOM_ID": self.crash_on,
            "FLOWGATE_KV_CACHE_BYTES": str(64 << 20), "FLOWGATE_MAX_MODEL_LEN": "512",
            "FLOWGATE_LOG_LEVEL": "warning",
        }

    def start_gateway(self) -> None:
        log = open(self.tmp / "gateway.log", "ab")  # noqa: SIM115 - the process owns it
        self.gateway = subprocess.Popen(
            [sys.executable, "-c", "from gateway.cli import app; app()", "serve", "--port", str(self.port)],
            cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while True:
            assert self.gateway.poll() is None, (self.tmp / "gateway.log").read_text()[-3000:]
            try:
                if httpx.get(f"{self.url}/ready", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "gateway did not start"
            time.sleep(0.5)

    def stop_gateway(self, sig: int = signal.SIGTERM) -> None:
        assert self.gateway is not None
        self.gateway.send_signal(sig)
        try:
            self.gateway.wait(30)
        except subprocess.TimeoutExpired:
            self.gateway.kill()
            self.gateway.wait()

    def start_worker(self, concurrency: int = 2) -> subprocess.Popen:
        log = open(self.tmp / "worker.log", "ab")  # noqa: SIM115
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q",
             f"{self.prefix}bulk,{self.prefix}hooks", "-c", str(concurrency), "-l", "info",
             "-n", f"w{len(self.workers)}-{self.prefix}@%h", "--without-gossip", "--without-mingle",
             "--without-heartbeat"],
            cwd=ROOT, env=self.env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(worker)
        return worker

    def kill_worker(self, worker: subprocess.Popen) -> None:
        """SIGKILL the worker and its pool children (its own process group) at once."""
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()

    def close(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(20)
                except subprocess.TimeoutExpired:
                    os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
        if self.gateway is not None and self.gateway.poll() is None:
            self.stop_gateway(signal.SIGINT)
        if self.redis.process is not None and self.redis.process.poll() is None:
            self.redis.kill()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bulk-stack")
    server = RedisServer(tmp / "redis")
    server.start()
    stack = Stack(tmp=tmp, redis=server)
    try:
        stack.start_gateway()
        stack.start_worker()
        yield stack
    finally:
        stack.close()


__all__ = ["MODEL", "Stack"]
