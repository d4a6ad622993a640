"""A chunk task published inside a span carries that span's W3C trace context in its headers."""

from __future__ import annotations

import json

import redis
from opentelemetry.sdk.trace import TracerProvider

from workers.jobs import JobService
from workers.records import InputLine


def test_published_chunk_carries_traceparent(worker_settings):
    service = JobService(worker_settings)
    # A provider of the test's own (the global one stays unset for other suites); the propagator reads the
    # current span from the context, whoever made it.
    with TracerProvider().get_tracer("test").start_as_current_span("submit") as span:
        job = service.submit(owner="a", face="job", endpoint="/v1/chat/completions", window_s=60,
                             window_label="1m", lines=[InputLine(custom_id="x", body={})])
        trace_id = format(span.get_span_context().trace_id, "032x")
    r = redis.Redis.from_url(worker_settings.redis_url)
    messages = [json.loads(m) for m in r.lrange(f"{worker_settings.prefix}celery:{worker_settings.queue}", 0, -1)]
    headers = next(m["headers"] for m in messages if m["headers"]["id"] == f"{job.id}.0")
    assert trace_id in headers["traceparent"]
