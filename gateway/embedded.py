"""`flowgate serve` without FLOWGATE_REDIS_URL: a private redis-server (AOF in FLOWGATE_HOME/redis) and one
Celery worker process beside the engine, so bulk jobs work with nothing but one command.

With FLOWGATE_REDIS_URL set nothing starts here: the gateway uses that Redis and `flowgate worker`
processes (any number, any hosts) do the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gateway.settings import Settings

logger = logging.getLogger("flowgate.gateway")
READY_TIMEOUT_S = 30.0


def _die_with_parent() -> None:
    """Children get SIGTERM when the gateway dies, even by SIGKILL (Linux), so no Redis is left behind."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bulk_dir() -> Path:
    """FLOWGATE_BULK_DIR, else FLOWGATE_HOME: the embedded Redis's AOF and the job files live under it."""
    return Path(os.environ.get("FLOWGATE_BULK_DIR") or os.environ.get("FLOWGATE_HOME") or "~/.cache/flowgate").expanduser()


def start_redis(data_dir: Path) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise FileNotFoundError("redis-server")
    data_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--appendonly", "yes",
         "--appendfsync", "everysec", "--save", "", "--daemonize", "no", "--logfile", "redis.log"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode} (see {data_dir / 'redis.log'})")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(64).startswith(b"+PONG"):
                    return process, f"redis://127.0.0.1:{port}/0"
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("redis-server did not answer")


def worker_command(concurrency: int, name: str) -> list[str]:
    from workers.config import WorkerSettings

    settings = WorkerSettings.from_env()
    return [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q",
            f"{settings.queue},{settings.webhook_queue}", "-c", str(concurrency), "-n", name,
            "-l", os.environ.get("FLOWGATE_WORKER_LOG_LEVEL", "warning"),
            "--without-gossip", "--without-mingle", "--without-heartbeat"]


def _stop(process: subprocess.Popen, sig: int, timeout: float) -> None:
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def embedded_bulk(settings: Settings) -> Iterator[None]:
    """Start Redis and a worker unless FLOWGATE_REDIS_URL points at a shared Redis (or FLOWGATE_BULK=off)."""
    if os.environ.get("FLOWGATE_REDIS_URL") or os.environ.get("FLOWGATE_BULK", "").lower() in ("0", "off"):
        yield
        return
    data_dir, lock = _claim(bulk_dir() / "redis")
    try:
        redis, url = start_redis(data_dir)
    except (FileNotFoundError, RuntimeError) as exc:
        lock.close()
        logger.warning("bulk jobs disabled: could not start the embedded Redis (%s); set FLOWGATE_REDIS_URL", exc)
        yield
        return
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    os.environ["FLOWGATE_REDIS_URL"] = url
    os.environ["FLOWGATE_BULK_EMBEDDED"] = "1"
    os.environ.setdefault("FLOWGATE_WORKER_API_KEY", _worker_key())  # its lines pass authentication when it is on
    os.environ.setdefault("FLOWGATE_GATEWAY_URL", f"http://{host}:{settings.port}")
    supervisor = WorkerSupervisor(int(os.environ.get("FLOWGATE_WORKER_CONCURRENCY", "1")))
    try:
        yield
    finally:
        supervisor.stop()
        _stop(redis, signal.SIGTERM, 15)  # Redis fsyncs its AOF on SIGTERM
        lock.close()


def _worker_key() -> str:
    from gateway.auth.config import AuthConfig
    from gateway.auth.keys import load_pepper
    from gateway.auth.store import FileKeyStore, enroll_embedded_worker

    config = AuthConfig.from_env()  # embedded: keys are in the file store
    return asyncio.run(enroll_embedded_worker(FileKeyStore(config.keys_file), load_pepper(config.pepper_file)))


def _claim(data_dir: Path):
    """The AOF directory, locked for this process: a second `flowgate serve` on the same FLOWGATE_BULK_DIR
    (tests, benchmarks) gets a private temporary one instead of two Redis servers writing one AOF."""
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = open(data_dir / ".lock", "w")  # noqa: SIM115 - held until the server stops
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return data_dir, lock
    except OSError:
        lock.close()
    private = Path(tempfile.mkdtemp(prefix="flowgate-redis-"))
    logger.warning("%s is in use by another flowgate serve; this one keeps its jobs in %s (not kept across "
                   "restarts); set FLOWGATE_BULK_DIR to give it its own", data_dir, private)
    lock = open(private / ".lock", "w")  # noqa: SIM115
    return private, lock


class WorkerSupervisor:
    """Keeps the embedded worker running. A worker that died (OOM killer, a crash) held chunks nobody else
    will redeliver soon, so after a restart every unfinished job's missing chunks are republished."""

    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        self.stopping = threading.Event()
        self.process = self._start()
        threading.Thread(target=self._watch, name="worker-supervisor", daemon=True).start()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(worker_command(self.concurrency, "embedded@%h"), preexec_fn=_die_with_parent)

    def _watch(self) -> None:
        from workers.config import WorkerSettings
        from workers.jobs import JobService

        while not self.stopping.wait(1.0):
            if self.process.poll() is None or self.stopping.is_set():
                continue
            logger.warning("the embedded worker exited with %s; restarting it", self.process.returncode)
            self.process = self._start()
            try:
                JobService(WorkerSettings.from_env()).recover(republish_all=True)
            except Exception:
                logger.exception("republishing unfinished chunks failed; the periodic sweep will retry")

    def stop(self) -> None:
        self.stopping.set()
        _stop(self.process, signal.SIGTERM, 15)  # warm shutdown; unacked chunks go back to the queue
