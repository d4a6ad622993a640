"""/v1/jobs against the real `flowgate serve` (embedded Redis and Celery worker): plain HTTP, as n8n calls it."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

MODEL = "smollm2-135m"


def line(custom_id: str, text: str = "Say hi", max_tokens: int = 2, **extra) -> dict:
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens,
            "temperature": 0} | extra
    return {"custom_id": custom_id, "body": body}


def wait_terminal(http, job_id: str, timeout: float = 240) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled", "expired"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(0.5)


def assert_every_line_once(http, job: dict, submitted: set[str]) -> list[dict]:
    """The bulk invariant: each accepted line has exactly one outcome; counts agree with the outcomes."""
    lines = [x for x in http.get(f"/v1/jobs/{job['id']}/results", params={"format": "jsonl"}).iter_lines() if x]
    import json

    outcomes = [json.loads(x) for x in lines]
    ids = [o["custom_id"] for o in outcomes]
    assert sorted(ids) == sorted(submitted), "every accepted line ends exactly once"
    failed = sum(1 for o in outcomes if o["error"] is not None)
    assert job["counts"] == {"total": len(submitted), "completed": len(ids) - failed, "failed": failed}
    return outcomes


def test_job_runs_to_completion_with_paged_results(http, server):
    lines = [line(f"p{i}", f"Count to {i}") for i in range(5)]
    created = http.post("/v1/jobs", json={"requests": lines, "metadata": {"flow": "nightly"}})
    assert created.status_code == 202, created.text
    job = created.json()
    assert created.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["status"] in ("queued", "in_progress") and job["counts"]["total"] == 5
    job = wait_terminal(http, job["id"])
    assert job["status"] == "completed" and job["progress"] == 1.0 and job["metadata"] == {"flow": "nightly"}
    outcomes = assert_every_line_once(http, job, {f"p{i}" for i in range(5)})
    for outcome in outcomes:
        assert outcome["response"]["status_code"] == 200
        assert outcome["response"]["body"]["choices"][0]["message"]["role"] == "assistant"
    first = http.get(f"/v1/jobs/{job['id']}/results", params={"limit": 2}).json()
    assert len(first["data"]) == 2 and first["has_more"] and first["job_status"] == "completed"
    rest = http.get(f"/v1/jobs/{job['id']}/results", params={"after": first["last_id"], "limit": 10}).json()
    assert not rest["has_more"]
    assert {o["custom_id"] for o in first["data"] + rest["data"]} == {f"p{i}" for i in range(5)}
    listed = http.get("/v1/jobs", params={"limit": 100}).json()
    assert job["id"] in [j["id"] for j in listed["data"]]
    assert server.wait_idle()["kv_blocks_used"] == 0


@pytest.mark.parametrize(
    ("requests", "code", "fragment"),
    [
        ([line("a"), {"body": line("b")["body"]}], None, "Invalid request body"),
        ([line("a"), line("a")], "duplicate_custom_id", "Line 2"),
        ([line("a"), line("b", max_tokens=0)], "invalid_request", "Line 2"),
        ([line("a") | {"body": line("a")["body"] | {"model": "nope"}}], "model_not_found", "Line 1"),
        ([line("a", stream=True)], "invalid_request", "stream"),
    ],
)
def test_invalid_lines_are_rejected_with_their_line_number(http, requests, code, fragment):
    response = http.post("/v1/jobs", json={"requests": requests})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert fragment in error["message"] and error["type"] == "invalid_request_error"
    if code:
        assert error["code"] == code


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({}, "requests"),
        ({"requests": [line("a")], "input_file_id": "file-abc"}, "requests"),
        ({"requests": [line("a")], "callback_url": "http://example.com/hook"}, "callback_url"),
        ({"requests": [line("a")], "completion_window": "soon"}, "completion_window"),
    ],
)
def test_malformed_jobs_get_400(http, payload, param):
    response = http.post("/v1/jobs", json=payload)
    assert response.status_code == 400, response.text
    assert param in (response.json()["error"]["param"] or "")


def test_unknown_job_is_404(http):
    for path in ("/v1/jobs/job_nope", "/v1/jobs/job_nope/results"):
        response = http.get(path)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert http.post("/v1/jobs/job_nope/cancel").status_code == 404


def test_idempotency_key_returns_the_same_job_and_rejects_another_body(http):
    key = f"nightly-{time.time_ns()}"
    payload = {"requests": [line("i1"), line("i2")]}
    first = http.post("/v1/jobs", json=payload, headers={"Idempotency-Key": key})
    again = http.post("/v1/jobs", json=payload, headers={"Idempotency-Key": key})
    assert first.status_code == again.status_code == 202
    assert first.json()["id"] == again.json()["id"]
    other = http.post("/v1/jobs", json={"requests": [line("i3")]}, headers={"Idempotency-Key": key})
    assert other.status_code == 409 and other.json()["error"]["code"] == "idempotency_key_reused"
    job = wait_terminal(http, first.json()["id"])
    assert_every_line_once(http, job, {"i1", "i2"})


def test_cancel_keeps_finished_lines_and_closes_the_rest(http, server):
    lines = [line(f"c{i}", "Write a long story about a fox", max_tokens=64) for i in range(40)]
    job = http.post("/v1/jobs", json={"requests": lines}).json()
    cancelled = http.post(f"/v1/jobs/{job['id']}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["status"] in ("cancelling", "cancelled")
    job = wait_terminal(http, job["id"])
    assert job["status"] == "cancelled"
    outcomes = assert_every_line_once(http, job, {f"c{i}" for i in range(40)})
    closed = [o for o in outcomes if o["error"] and o["error"]["code"] == "batch_cancelled"]
    assert closed, "pending lines end as cancelled errors"
    assert all(o["response"]["status_code"] == 200 for o in outcomes if o["error"] is None)
    assert http.post(f"/v1/jobs/{job['id']}/cancel").json()["status"] == "cancelled"  # idempotent
    assert server.wait_idle(60)["kv_blocks_used"] == 0


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_sigkilled_embedded_worker_is_restarted_and_the_job_finishes(http, server):
    """Fault: SIGKILL of the embedded worker (and its pool children) while a chunk runs."""
    workers = [p for p in _children(server.process.pid) if "celery" in _cmdline(p)]
    assert len(workers) == 1, "flowgate serve runs one embedded worker"
    lines = [line(f"k{i}", f"Describe the number {i}", max_tokens=24) for i in range(12)]
    job = http.post("/v1/jobs", json={"requests": lines}).json()
    deadline = time.monotonic() + 120
    while http.get(f"/v1/jobs/{job['id']}").json()["counts"]["completed"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    partial = http.get(f"/v1/jobs/{job['id']}/results").json()  # results so far, while the job runs
    assert 1 <= len(partial["data"]) < 12 and partial["job_status"] == "in_progress"
    for pid in [workers[0], *_children(workers[0])]:
        os.kill(pid, signal.SIGKILL)
    job = wait_terminal(http, job["id"], timeout=300)
    assert job["status"] == "completed"
    outcomes = assert_every_line_once(http, job, {f"k{i}" for i in range(12)})
    assert all(o["error"] is None for o in outcomes)
    assert [p for p in _children(server.process.pid) if "celery" in _cmdline(p)] != workers
    assert server.wait_idle(60)["kv_blocks_used"] == 0


def test_webhook_is_signed_and_sent_once_on_completion(http, server):
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from standardwebhooks.webhooks import Webhook

    received = []

    class Hook(BaseHTTPRequestHandler):
        def do_POST(self):
            received.append(({k.lower(): v for k, v in self.headers.items()},
                             self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    receiver = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
        job = http.post("/v1/jobs", json={"requests": [line("w1")], "callback_url": url}).json()
        assert wait_terminal(http, job["id"])["status"] == "completed"
        deadline = time.monotonic() + 30
        while not received:
            assert time.monotonic() < deadline, "no webhook arrived"
            time.sleep(0.2)
        headers, body = received[0]
        secret = (server.log_path.parent / "bulk" / "webhook_secret").read_text().strip()
        event = Webhook(secret).verify(body, headers)
        assert event["type"] == "job.completed" and event["data"]["id"] == job["id"]
        assert headers["webhook-id"] == f"msg_{job['id']}_completed"
        assert json.loads(body)["data"]["counts"] == {"total": 1, "completed": 1, "failed": 0}
        time.sleep(1)
        assert len(received) == 1
    finally:
        receiver.shutdown()


def test_cli_submit_waits_and_writes_results(server, tmp_path):
    import json
    import subprocess
    import sys

    from tests.gateway.conftest import ROOT

    source = tmp_path / "in.jsonl"
    source.write_text("\n".join(json.dumps(line(f"cli{i}")) for i in range(2)) + "\n")
    done = subprocess.run(
        [sys.executable, "-c", "from gateway.cli import app; app()", "jobs", "submit", str(source), "--wait",
         "--url", server.url], cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("job_")
    results = [json.loads(x) for x in (tmp_path / "in.results.jsonl").read_text().splitlines()]
    assert sorted(r["custom_id"] for r in results) == ["cli0", "cli1"]


def test_job_past_its_completion_window_expires_keeping_finished_lines(http, server):
    lines = [line(f"e{i}", "Write a long story about a fox", max_tokens=64) for i in range(30)]
    job = http.post("/v1/jobs", json={"requests": lines, "completion_window": "2s"}).json()
    time.sleep(2.5)
    job = wait_terminal(http, job["id"])
    assert job["status"] == "expired" and job["expired_at"] is not None
    outcomes = assert_every_line_once(http, job, {f"e{i}" for i in range(30)})
    assert any(o["error"] and o["error"]["code"] == "batch_expired" for o in outcomes)
    assert server.wait_idle(60)["kv_blocks_used"] == 0


def test_size_limits_are_client_errors():
    from gateway.bulk import check_size
    from gateway.errors import ApiError
    from workers.config import WorkerSettings

    settings = WorkerSettings(max_lines=2, max_bytes=100)
    check_size(settings, 2, 100)
    with pytest.raises(ApiError) as lines:
        check_size(settings, 3, 10)
    with pytest.raises(ApiError) as size:
        check_size(settings, 1, 101)
    assert (lines.value.status, lines.value.code) == (400, "too_many_lines")
    assert (size.value.status, size.value.code) == (413, "request_too_large")
