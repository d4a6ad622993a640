"""Job webhooks: signed per Standard Webhooks, sent by a retried Celery task through one guarded client.

The delivery id (`webhook-id`) is stable across retries, so a receiver can drop repeats. The SSRF guard resolves
the host at send time, rejects it if any address is loopback, private, link-local (cloud metadata included),
multicast, reserved or unspecified, and then connects to the address it checked (no second lookup to rebind).
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from urllib.parse import SplitResult, urlsplit

import httpx
import msgspec
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.trace import Span, SpanKind, StatusCode
from standardwebhooks.webhooks import Webhook

from workers.config import WorkerSettings
from workers.ledger import now
from workers.telemetry import job_trace, tracer

MAX_RESPONSE_BYTES = 64 << 10
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class BlockedDestination(Exception):
    """The callback URL points somewhere a webhook must not go."""


def check_url(url: str, settings: WorkerSettings, *, resolve: bool = True) -> list[str]:
    """The addresses `url` may be sent to; raises BlockedDestination. Without `resolve`, only the shape."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in ("https", "http") or not host:
        raise BlockedDestination("callback_url must be an absolute https URL")
    allowed = _allowlisted(host, settings)
    if parts.scheme == "http" and not (settings.webhook_allow_http or allowed):
        raise BlockedDestination("callback_url must use https")
    if parts.username or parts.password:
        raise BlockedDestination("callback_url must not carry credentials")
    if not resolve:
        return []
    try:
        infos = socket.getaddrinfo(host, parts.port or (443 if parts.scheme == "https" else 80),
                                   type=socket.SOCK_STREAM)
    except OSError as exc:
        raise BlockedDestination(f"callback_url host does not resolve: {exc}") from exc
    addresses = sorted({info[4][0] for info in infos})
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if not (allowed or _allowlisted(str(ip), settings)) and not ip.is_global:
            raise BlockedDestination("callback_url resolves to a non-public address")
        if ip.is_multicast:
            raise BlockedDestination("callback_url resolves to a multicast address")
    return addresses


def _allowlisted(host: str, settings: WorkerSettings) -> bool:
    for entry in settings.webhook_allow_hosts:
        if host == entry:
            return True
        try:
            if ipaddress.ip_address(host) in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue
    return False


def signing_secret(settings: WorkerSettings) -> str:
    """FLOWGATE_WEBHOOK_SECRET, or one generated once per FLOWGATE_HOME (readable only by its owner)."""
    if settings.webhook_secret:
        return settings.webhook_secret
    path = settings.home / "webhook_secret"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        if not path.read_text().strip():
            path.write_text("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    return path.read_text().strip()


def schedule_delivery(service, job_id: str, status: str) -> None:
    """Record the event once and queue its delivery under the event's stable id."""
    job = service.ledger.get(job_id)
    if job is None or not job.callback_url:
        return
    delivery_id = f"msg_{job_id}_{status}"
    kind = "batch" if job.face == "batch" else "job"
    event = {"type": f"{kind}.{status}", "timestamp": now(),
             "data": {"id": job_id, "object": kind, "status": status,
                      "counts": {"total": job.total, "completed": job.completed, "failed": job.failed}}}
    key = f"{service.settings.prefix}webhook:{delivery_id}"
    if service.ledger.r.hsetnx(key, "url", job.callback_url):
        service.ledger.r.hset(key, mapping={"payload": msgspec.json.encode(event).decode(), "state": "pending"})
        with job_trace(job.traceparent):
            service.celery.send_task("workers.tasks.deliver_webhook", args=[delivery_id], task_id=delivery_id)


def send(settings: WorkerSettings, delivery_id: str, url: str, payload: str) -> int:
    """POST once; returns the status code. Connects to the checked address, never follows redirects."""
    parts = urlsplit(url)
    with _attempt_span(delivery_id, parts) as span:
        addresses = check_url(url, settings)
        address = addresses[0]
        netloc = f"[{address}]" if ":" in address else address
        if parts.port:
            netloc += f":{parts.port}"
        pinned = parts._replace(netloc=netloc).geturl()
        sent_at = datetime.now(UTC).replace(microsecond=0)
        signature = Webhook(signing_secret(settings)).sign(delivery_id, sent_at, payload)
        headers = {
            "Host": parts.netloc.rsplit("@", 1)[-1],
            "Content-Type": "application/json",
            "User-Agent": "flowgate-webhooks",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature,
        }
        with httpx.Client(timeout=TIMEOUT, follow_redirects=False) as http, http.stream(
            "POST", pinned, content=payload, headers=headers, extensions={"sni_hostname": parts.hostname},
        ) as response:
            read = 0
            for chunk in response.iter_bytes():
                read += len(chunk)
                if read >= MAX_RESPONSE_BYTES:
                    break
            span.set_attribute("http.response.status_code", response.status_code)
            if not 200 <= response.status_code < 300:
                span.set_attribute("error.type", str(response.status_code))
            return response.status_code


@contextmanager
def _attempt_span(delivery_id: str, parts: SplitResult) -> Iterator[Span]:
    """One delivery attempt as an HTTP client span (`job.webhook`, in the job's trace through the task's
    headers) that names only the receiver's host. A callback URL's path or query is often the receiver's only
    credential (n8n, Zapier), so the httpx instrumentation's span, which records `url.full`, is suppressed,
    and an error is recorded by its type alone (exception messages may quote the URL)."""
    attributes = {"http.request.method": "POST", "url.scheme": parts.scheme, "server.address": parts.hostname or "",
                  "server.port": parts.port or (443 if parts.scheme == "https" else 80),
                  "flowgate.webhook.id": delivery_id}
    with tracer().start_as_current_span("job.webhook", kind=SpanKind.CLIENT, attributes=attributes,
                                        record_exception=False, set_status_on_exception=False) as span, \
            suppress_http_instrumentation():
        try:
            yield span
        except Exception as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(StatusCode.ERROR)
            raise
