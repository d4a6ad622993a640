"""Under PROMETHEUS_MULTIPROC_DIR, what a worker process records shows in the gateway's /metrics registry."""

from __future__ import annotations

import os
import subprocess
import sys

from prometheus_client.parser import text_string_to_metric_families

from tests.gateway.conftest import ROOT

WORKER = """
from workers import telemetry
telemetry.record_job_state("completed")
telemetry.record_line(True); telemetry.record_line(True); telemetry.record_line(False)
telemetry.record_webhook(False)
telemetry.set_queue_depth(7)
"""
GATEWAY = """
from prometheus_client import generate_latest
from gateway.telemetry.exposition import process_registry
import gateway.telemetry.metrics
gateway.telemetry.metrics.GENERATION_TOKENS.labels("paid", "anonymous").inc(5)
print(generate_latest(process_registry()).decode())
"""


def test_worker_metrics_reach_the_gateway_scrape(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for _ in range(2):  # two worker processes: their counters add up
        subprocess.run([sys.executable, "-c", WORKER], env=env, cwd=ROOT, check=True, timeout=60)
    text = subprocess.run([sys.executable, "-c", GATEWAY], env=env, cwd=ROOT, check=True, timeout=60,
                          capture_output=True, text=True).stdout
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    assert samples[("flowgate_bulk_jobs_total", (("state", "completed"),))] == 2
    assert samples[("flowgate_bulk_lines_total", (("outcome", "done"),))] == 4
    assert samples[("flowgate_bulk_lines_total", (("outcome", "failed"),))] == 2
    assert samples[("flowgate_webhook_deliveries_total", (("outcome", "failed"),))] == 2
    assert samples[("flowgate_bulk_queue_depth", ())] == 7
    assert samples[("flowgate_generation_tokens_total", (("key_id", "anonymous"), ("tier", "paid")))] == 5
