"""`flowgate worker --engine local`: a worker with an engine of its own runs a job with no gateway at all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.gateway.conftest import MODEL, ROOT
from workers.jobs import JobService
from workers.records import InputLine

pytestmark = pytest.mark.e2e


def test_local_engine_worker_runs_a_job(worker_settings, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWGATE_REDIS_URL": worker_settings.redis_url,
           "FLOWGATE_BULK_PREFIX": worker_settings.prefix, "FLOWGATE_BULK_QUEUE": worker_settings.queue,
           "FLOWGATE_WEBHOOK_QUEUE": worker_settings.webhook_queue, "FLOWGATE_BULK_DIR": str(tmp_path),
           "FLOWGATE_KV_CACHE_BYTES": str(64 << 20), "FLOWGATE_MAX_MODEL_LEN": "512", "FLOWGATE_MODEL": MODEL}
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115 - the process owns it
    worker = subprocess.Popen([sys.executable, "-c", "from gateway.cli import app; app()", "worker",
                               "--engine", "local", "--loglevel", "info"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        service = JobService(worker_settings)
        system = {"role": "system", "content": "You are a terse assistant for a product catalogue. " * 4}
        lines = [InputLine(custom_id=f"x{i}", body={"model": MODEL, "max_tokens": 4, "temperature": 0,
                                                     "messages": [system, {"role": "user", "content": f"Item {i}"}]})
                 for i in range(6)]
        lines.append(InputLine(custom_id="tools", body=lines[0].body | {"tools": [{"type": "function"}]}))
        job = service.submit(owner="anonymous", face="job", endpoint="/v1/chat/completions", lines=lines,
                             window_s=3600, window_label="1h")
        deadline = time.monotonic() + 400
        while not (job := service.ledger.get(job.id)).terminal:
            assert worker.poll() is None, (tmp_path / "worker.log").read_text()[-3000:]
            assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()[-3000:]
            time.sleep(0.5)
        outcomes = {o.custom_id: o for o in service.ledger.all_outcomes(job.id)}
        assert (job.status, job.completed, job.failed) == ("completed", 6, 1)
        assert outcomes["tools"].error.code == "unsupported_by_local_engine"
        body = outcomes["x0"].response.body
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 4
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.pid, signal.SIGKILL)
        log.close()
