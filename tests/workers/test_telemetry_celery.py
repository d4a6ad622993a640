"""The trace crosses Celery: a span in the submitting process -> the instrumented publish -> the task run in a
real prefork worker process, linked through the task headers, exported over real OTLP/HTTP."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys

import redis

from tests.gateway.conftest import ROOT
from tests.otlp_receiver import OTLPReceiver

REDIS_URL = os.environ.get("FLOWGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SUBMIT = """
from opentelemetry import trace
from workers.telemetry import configure_tracing, instrument_libraries
configure_tracing(); instrument_libraries()
from tests.workers.celery_trace_app import run_line
with trace.get_tracer("test").start_as_current_span("submit job") as span:
    run_line.delay(7)
    print(format(span.get_span_context().trace_id, "032x"))
trace.get_tracer_provider().shutdown()
"""


def test_publish_and_task_run_share_the_submitters_trace(tmp_path):
    receiver = OTLPReceiver()
    prefix = f"flowgate-test-{secrets.token_hex(4)}:"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRACE_TEST_BROKER": REDIS_URL,
           "TRACE_TEST_QUEUE": f"{prefix}lines", "TRACE_TEST_PREFIX": prefix,
           "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50",
           "OTEL_SERVICE_NAME": "flowgate-test"}
    with open(tmp_path / "worker.log", "wb") as log:  # the child keeps its own descriptor
        worker = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "tests.workers.celery_trace_app", "worker", "--pool", "prefork",
             "--concurrency", "1", "--without-heartbeat", "--without-gossip", "--without-mingle",
             "--loglevel", "WARNING"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        trace_id = subprocess.run([sys.executable, "-c", SUBMIT], cwd=ROOT, env=env, check=True, timeout=60,
                                  capture_output=True, text=True).stdout.strip()

        def linked(spans):
            return any(s["trace_id"] == trace_id and s["name"] == "run/trace_test.run_line" for s in spans)

        spans = [s for s in receiver.wait_for(linked, timeout=60) if s["trace_id"] == trace_id]
        by_name = {s["name"]: s for s in spans}
        submit, publish, run = (by_name["submit job"], by_name["apply_async/trace_test.run_line"],
                                by_name["run/trace_test.run_line"])
        assert publish["parent_span_id"] == submit["span_id"]
        assert run["parent_span_id"] == publish["span_id"]  # carried in the task's headers
        assert run["attributes"]["celery.task_name"] == "trace_test.run_line"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        receiver.close()
        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(f"{prefix}*"):
            client.delete(key)
