"""The one-command deployment survives its own restart: `flowgate serve` stopped mid-job and started again on
the same FLOWGATE_BULK_DIR finishes the job (the embedded Redis reloads its AOF, the new worker republishes)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from tests.gateway.conftest import MODEL, ROOT, free_port

pytestmark = pytest.mark.e2e


def start(port: int, env: dict, log) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", "from gateway.cli import app; app()", "serve", "--port",
                                str(port)], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while True:
        assert process.poll() is None, "flowgate serve exited"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.5)


def test_embedded_serve_restarted_mid_job_finishes_it(tmp_path):
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWGATE_REDIS_URL": "", "FLOWGATE_BULK_DIR": str(tmp_path),
           "FLOWGATE_KV_CACHE_BYTES": str(64 << 20), "FLOWGATE_MAX_MODEL_LEN": "512",
           "FLOWGATE_BULK_CHUNK_SIZE": "4", "FLOWGATE_LOG_LEVEL": "warning"}
    url = f"http://127.0.0.1:{port}"
    requests = [{"custom_id": f"s{i}", "body": {"model": MODEL, "max_tokens": 24, "temperature": 0,
                 "messages": [{"role": "user", "content": f"Write about {i}"}]}} for i in range(16)]
    with open(tmp_path / "serve.log", "ab") as log:
        server = start(port, env, log)
        try:
            job = httpx.post(f"{url}/v1/jobs", json={"requests": requests}, timeout=60).json()
            deadline = time.monotonic() + 200
            while httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=60).json()["counts"]["completed"] < 1:
                assert time.monotonic() < deadline
                time.sleep(0.3)
            server.send_signal(signal.SIGTERM)
            server.wait(60)
            server = start(port, env, log)
            deadline = time.monotonic() + 300
            while (job := httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=60).json())["status"] != "completed":
                assert time.monotonic() < deadline, job
                time.sleep(0.5)
            raw = httpx.get(f"{url}/v1/jobs/{job['id']}/results", params={"format": "jsonl"}, timeout=60).text
            ids = [json.loads(x)["custom_id"] for x in raw.splitlines() if x]
            assert sorted(ids) == sorted(r["custom_id"] for r in requests)
            assert job["counts"] == {"total": 16, "completed": 16, "failed": 0}
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(60)
