"""Starting keyed `flowgate serve` processes and running `flowgate keys` for the tier tests.

Every server gets its own key store: a file in the test's tmp dir, or a unique FLOWGATE_REDIS_PREFIX on the
shared Redis (removed afterwards, key by key)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from tests.gateway.conftest import MODEL, ROOT, Server, _wait_ready, free_port

REDIS_URL = os.environ.get("FLOWGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
CLI = [sys.executable, "-c", "from gateway.cli import app; app()"]


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWGATE_") or k == "FLOWGATE_HOME"}
    return env | {
        "PYTHONPATH": str(ROOT),
        "FLOWGATE_KV_CACHE_BYTES": str(64 << 20),
        "FLOWGATE_MAX_MODEL_LEN": "1024",
        "FLOWGATE_LOG_LEVEL": "warning",
        "FLOWGATE_KEYS_FILE": str(tmp / "keys.json"),
        "FLOWGATE_KEY_PEPPER": "test-pepper-" + uuid.uuid4().hex,
        "FLOWGATE_ADMIN_KEY": "admin-" + uuid.uuid4().hex,
    } | extra


def redis_env(tmp: Path, **extra: str) -> dict[str, str]:
    return base_env(tmp, FLOWGATE_REDIS_URL=REDIS_URL, FLOWGATE_REDIS_PREFIX=f"fgtest:{uuid.uuid4().hex}:",
                    **extra)


def keys(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([*CLI, "keys", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


def create_key(env: dict[str, str], *args: str) -> tuple[str, str]:
    """(secret, key id) of a new key."""
    created = json.loads(keys(env, "create", "--json", *args).strip().splitlines()[-1])
    return created["key"], created["key_id"]


def start(env: dict[str, str], log_path: Path) -> Server:
    """Start without waiting (so several replicas load their models at once); `ready()` waits."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*CLI, "serve", "--port", str(port)], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    return Server(url=f"http://127.0.0.1:{port}", process=process, log_path=log_path)


def ready(server: Server) -> Server:
    _wait_ready(server)
    return server


def stop(server: Server) -> None:
    server.process.send_signal(signal.SIGINT)
    try:
        server.process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        server.process.wait()


def drop_redis_prefix(env: dict[str, str]) -> None:
    import redis

    prefix = env["FLOWGATE_REDIS_PREFIX"]
    with redis.Redis.from_url(env["FLOWGATE_REDIS_URL"]) as client:
        found = list(client.scan_iter(match=f"{prefix}*"))
        if found:
            client.delete(*found)


def openai_client(server: Server, key: str):
    from openai import OpenAI

    return OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0, timeout=120)


def chat(server: Server, key: str | None, headers: dict | None = None, **body) -> httpx.Response:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 2} | body
    auth = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.post(f"{server.url}/v1/chat/completions", json=payload, headers=auth | (headers or {}),
                      timeout=120)


@contextlib.contextmanager
def servers(*envs_and_logs):
    started = [start(env, log) for env, log in envs_and_logs]
    try:
        yield [ready(s) for s in started]
    finally:
        for s in started:
            stop(s)
