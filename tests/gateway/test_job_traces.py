"""Bulk jobs on a keyed, traced `flowgate serve` (its embedded Redis and Celery worker, both exporting over
OTLP/HTTP to a real receiver in this process): one trace from submit to the webhook, and a key's default
callback_url."""

from __future__ import annotations

import io
import json
import secrets
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from gateway.auth.keys import embedded_worker_key
from tests.gateway.conftest import MODEL, ROOT
from tests.gateway.keyed_servers import CLI, base_env, create_key, keys, openai_client, servers
from tests.otlp_receiver import OTLPReceiver

WEBHOOK_SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TERMINAL = ("completed", "failed", "cancelled", "expired")


class HookReceiver:
    """Answers every POST with 204 and keeps (path, lowercased headers, body)."""

    def __init__(self):
        self.received: list[tuple[str, dict, bytes]] = []
        received = self.received

        class Hook(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                received.append((self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Hook)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, job_id: str, timeout: float = 60) -> tuple[str, dict, bytes]:
        """The one delivery about `job_id` (a second one, or none, fails)."""
        deadline = time.monotonic() + timeout
        while not (found := [r for r in self.received if json.loads(r[2])["data"]["id"] == job_id]):
            assert time.monotonic() < deadline, f"no webhook for {job_id}"
            time.sleep(0.1)
        assert len(found) == 1, found
        return found[0]


@pytest.fixture(scope="module")
def bulk(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("job-traces")
    spans, hooks = OTLPReceiver(), HookReceiver()
    # Path tokens: a callback URL is often its receiver's only credential, so it must stay out of traces.
    default_url = f"{hooks.url}/default/{secrets.token_hex(8)}"
    env = base_env(tmp, FLOWGATE_BULK_DIR=str(tmp / "bulk"), FLOWGATE_WEBHOOK_ALLOW_HOSTS="127.0.0.1",
                   FLOWGATE_WEBHOOK_SECRET=WEBHOOK_SECRET, OTEL_EXPORTER_OTLP_ENDPOINT=spans.url,
                   OTEL_SERVICE_NAME="flowgate-bulk-test", OTEL_BSP_SCHEDULE_DELAY="50")
    user_key, user_id = create_key(env, "--tier", "paid", "--callback-url", default_url)
    # No FLOWGATE_WORKER_API_KEY: the embedded worker runs its lines on the batch key `serve` derives for it.
    worker_key, worker = embedded_worker_key(env["FLOWGATE_KEY_PEPPER"].encode())
    assert worker.key_id in keys(env, "list", "--json")
    try:
        with servers((env, tmp / "server.log")) as (server,):
            yield {"server": server, "env": env, "spans": spans, "hooks": hooks, "key": user_key,
                   "key_id": user_id, "worker_key": worker_key, "default_url": default_url}
    finally:
        hooks.server.shutdown()
        spans.close()


def _http(bulk) -> httpx.Client:
    return httpx.Client(base_url=bulk["server"].url, timeout=60,
                        headers={"authorization": f"Bearer {bulk['key']}"})


def _line(custom_id: str, text: str) -> dict:
    return {"custom_id": custom_id, "body": {"model": MODEL, "messages": [{"role": "user", "content": text}],
                                            "max_tokens": 2, "temperature": 0}}


def _wait_terminal(http: httpx.Client, path: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while (job := http.get(path).json())["status"] not in TERMINAL:
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    return job


def test_a_job_is_one_trace_from_submit_through_lines_and_engine_to_the_webhook(bulk):
    hooks, receiver = bulk["hooks"], bulk["spans"]
    explicit_url = f"{hooks.url}/explicit/{secrets.token_hex(8)}"
    with _http(bulk) as http:
        created = http.post("/v1/jobs", json={"requests": [_line("t1", "Say hi"), _line("t2", "Say bye")],
                                              "callback_url": explicit_url})
        assert created.status_code == 202, created.text
        trace_id = created.json()["trace_id"]
        assert len(trace_id) == 32
        job = _wait_terminal(http, created.headers["location"])
    assert job["status"] == "completed" and job["trace_id"] == trace_id
    assert job["counts"]["failed"] == 0  # the worker's lines passed authentication
    path, _, _ = hooks.wait_for(job["id"])
    assert path == explicit_url.removeprefix(hooks.url)  # the body's callback_url wins over the key's default

    required = {"POST /v1/jobs": 1, "job.submit": 1, "apply_async/workers.tasks.run_chunk": 1,
                "run/workers.tasks.run_chunk": 1, "job.line": 2, "POST": 2, "POST /v1/chat/completions": 2,
                f"chat {MODEL}": 2, "engine.request": 2, "engine.decode": 2,
                "apply_async/workers.tasks.deliver_webhook": 1, "run/workers.tasks.deliver_webhook": 1,
                "job.webhook": 1}

    def complete(spans):
        names = [s["name"] for s in spans if s["trace_id"] == trace_id]
        return all(names.count(name) >= n for name, n in required.items())

    spans = [s for s in receiver.wait_for(complete, timeout=60) if s["trace_id"] == trace_id]
    by_id = {s["span_id"]: s for s in spans}

    def one(name: str, parent: dict | None = None) -> dict:
        found = [s for s in spans if s["name"] == name and (parent is None or s["parent_span_id"] == parent["span_id"])]
        assert len(found) == 1, (name, [s["name"] for s in spans])
        return found[0]

    server = one("POST /v1/jobs")
    assert server["parent_span_id"] == ""  # no traceparent from the client: the trace starts at the gateway
    submit = one("job.submit", server)
    assert submit["attributes"]["flowgate.job.id"] == job["id"]
    assert submit["attributes"]["flowgate.key_id"] == bulk["key_id"]
    assert submit["attributes"]["flowgate.job.num_lines"] == 2
    publish = one("apply_async/workers.tasks.run_chunk", submit)
    run = one("run/workers.tasks.run_chunk", publish)  # in the worker process, through the task's headers
    assert run["attributes"]["celery.task_name"] == "workers.tasks.run_chunk"

    lines = [s for s in spans if s["name"] == "job.line"]
    assert sorted(s["attributes"]["flowgate.job.custom_id"] for s in lines) == ["t1", "t2"]
    for line in lines:
        assert line["parent_span_id"] == run["span_id"] and "error.type" not in line["attributes"]
        [chat_server] = [s for s in spans if s["name"] == "POST /v1/chat/completions"
                         and by_id[s["parent_span_id"]]["parent_span_id"] == line["span_id"]]  # via httpx's span
        chat = one(f"chat {MODEL}", chat_server)
        assert chat["attributes"]["flowgate.tier"] == "batch" and chat["attributes"]["flowgate.priority"] == 2
        engine = one("engine.request", chat)
        assert {s["name"] for s in spans if s["parent_span_id"] == engine["span_id"]} >= {
            "engine.queue", "engine.prefill", "engine.decode"}

    # The chunk that finished the job scheduled the webhook; the recovery sweep, had it been first, publishes
    # under the job's submit span instead. Either way: the same trace.
    deliver = one("apply_async/workers.tasks.deliver_webhook")
    assert deliver["parent_span_id"] in (run["span_id"], submit["span_id"])
    webhook = one("job.webhook", one("run/workers.tasks.deliver_webhook", deliver))
    assert webhook["attributes"]["flowgate.webhook.id"] == f"msg_{job['id']}_completed"
    assert webhook["attributes"]["http.response.status_code"] == 204
    assert webhook["attributes"]["server.address"] == "127.0.0.1"
    assert not [s for s in spans if s["parent_span_id"] == webhook["span_id"]]  # no httpx span with the URL

    for payload in receiver.payloads:  # no key, signing secret or callback URL path, from either process
        for secret in (bulk["key"], bulk["worker_key"], WEBHOOK_SECRET, explicit_url.rsplit("/", 1)[1],
                       bulk["default_url"].rsplit("/", 1)[1]):
            assert secret.encode() not in payload

    # The polls are traces of their own, named by route template: an id in a span name is one operation per job.
    polled = receiver.wait_for(lambda spans: any(s["name"].startswith("GET /v1/jobs/") for s in spans), timeout=30)
    names = {s["name"] for s in polled}
    assert "GET /v1/jobs/{job_id}" in names and not any(job["id"] in name for name in names)


def test_a_keys_default_callback_url_gets_the_signed_webhook_for_jobs_and_batches(bulk):
    hooks, default_path = bulk["hooks"], bulk["default_url"].removeprefix(bulk["hooks"].url)
    with _http(bulk) as http:
        created = http.post("/v1/jobs", json={"requests": [_line("d1", "Say hi")]})
        assert created.status_code == 202, created.text
        assert created.json()["callback_url"] == bulk["default_url"]
        job = _wait_terminal(http, created.headers["location"])
    path, headers, body = hooks.wait_for(job["id"])
    assert path == default_path
    event = Webhook(WEBHOOK_SECRET).verify(body, headers)
    assert event["type"] == "job.completed" and event["data"]["counts"]["completed"] == 1

    client = openai_client(bulk["server"], bulk["key"])
    line = {"custom_id": "b1", "method": "POST", "url": "/v1/chat/completions", "body": _line("b1", "Hi")["body"]}
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(json.dumps(line).encode())), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    path, headers, body = hooks.wait_for(batch.id)
    assert path == default_path and Webhook(WEBHOOK_SECRET).verify(body, headers)["type"] == "batch.completed"
    assert len(client.batches.retrieve(batch.id).trace_id) == 32  # flowgate's field; the SDK keeps it


def test_callback_url_defaults_are_checked_like_a_jobs_own(bulk):
    env = bulk["env"]
    refused = keys_refusal(env, "create", "--tier", "paid", "--callback-url", "ftp://example.com/hook")
    assert "https" in refused
    _, key_id = create_key(env, "--tier", "paid")
    keys(env, "set-callback-url", key_id, "https://hooks.example.com/flowgate")
    [record] = [k for k in json.loads(keys(env, "list", "--json")) if k["key_id"] == key_id]
    assert record["callback_url"] == "https://hooks.example.com/flowgate"
    keys(env, "set-callback-url", key_id)
    [record] = [k for k in json.loads(keys(env, "list", "--json")) if k["key_id"] == key_id]
    assert "callback_url" not in record


def keys_refusal(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([*CLI, "keys", *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0, result.stdout
    return result.stderr
