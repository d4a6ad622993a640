"""The webhook client: the SSRF guard, Standard Webhooks signatures, no redirects, a bounded read."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
from standardwebhooks.webhooks import Webhook

from workers.webhooks import BlockedDestination, check_url, send

SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.mark.parametrize("url", [
    "http://example.com/hook",  # https only by default
    "https://127.0.0.1/hook", "https://localhost/hook", "https://[::1]/hook", "https://10.1.2.3/hook",
    "https://192.168.0.10/hook", "https://169.254.169.254/latest/meta-data", "https://224.0.0.1/hook",
    "https://0.0.0.0/hook", "https://user:pw@example.com/hook", "ftp://example.com/x", "/relative",
])
def test_guard_rejects_private_and_odd_destinations(worker_settings, url):
    with pytest.raises(BlockedDestination):
        check_url(url, worker_settings)


def test_allowlist_admits_a_local_receiver(worker_settings):
    settings = dataclasses.replace(worker_settings, webhook_allow_hosts=("127.0.0.0/8",))
    assert check_url("http://127.0.0.1:9/hook", settings) == ["127.0.0.1"]
    with pytest.raises(BlockedDestination):
        check_url("https://10.0.0.1/hook", settings)


class Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list] = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.received.append((self.path, dict(self.headers), body))
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.end_headers()
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"x" * (1 << 20))  # an endless-looking answer is read only so far

    def log_message(self, *args):
        pass


@pytest.fixture
def receiver():
    Receiver.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_delivery_is_signed_and_redirects_are_not_followed(worker_settings, receiver):
    settings = dataclasses.replace(worker_settings, webhook_allow_hosts=("127.0.0.1",), webhook_secret=SECRET)
    payload = json.dumps({"type": "job.completed", "data": {"id": "job_1"}})
    assert send(settings, "msg_job_1_completed", f"{receiver}/hook", payload) == 200
    _, headers, body = Receiver.received[0]
    headers = {k.lower(): v for k, v in headers.items()}
    assert headers["webhook-id"] == "msg_job_1_completed"
    assert Webhook(SECRET).verify(body, headers) == json.loads(payload)
    assert send(settings, "msg_2", f"{receiver}/redirect", payload) == 302
    assert [p for p, _, _ in Receiver.received] == ["/hook", "/redirect"]
