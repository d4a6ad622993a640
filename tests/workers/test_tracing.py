"""A job's tasks carry the W3C trace context of its submission in their headers: the chunks published at
submit, and those published later from another request or the recovery sweep, and the webhook."""

from __future__ import annotations

import json

import redis
from opentelemetry.sdk.trace import TracerProvider

from workers.jobs import JobService
from workers.records import InputLine

# A provider of the test's own (the global one stays unset for other suites); the propagator reads the current
# span from the context, whoever made it.
TRACER = TracerProvider().get_tracer("test")


def _headers(settings, queue: str, task_id: str) -> list[dict]:
    r = redis.Redis.from_url(settings.redis_url)
    messages = [json.loads(m) for m in r.lrange(f"{settings.prefix}celery:{queue}", 0, -1)]
    return [m["headers"] for m in messages if m["headers"]["id"] == task_id]


def _submit(service: JobService, **extra):
    with TRACER.start_as_current_span("submit") as span:
        job = service.submit(owner="a", face="job", endpoint="/v1/chat/completions", window_s=60,
                             window_label="1m", lines=[InputLine(custom_id="x", body={})], **extra)
    return job, format(span.get_span_context().trace_id, "032x")


def test_published_chunk_carries_traceparent(worker_settings):
    job, trace_id = _submit(JobService(worker_settings))
    assert job.trace_id == trace_id
    [headers] = _headers(worker_settings, worker_settings.queue, f"{job.id}.0")
    assert trace_id in headers["traceparent"]


def test_tasks_published_later_join_the_jobs_trace(worker_settings):
    service = JobService(worker_settings)
    stalled, stalled_trace = _submit(service)
    cancelled, cancelled_trace = _submit(service, callback_url="https://hooks.example.com/flowgate")
    with TRACER.start_as_current_span("a later request"):  # another trace
        service.recover(republish_all=True)
        service.cancel(cancelled.id, "a")
    republished = _headers(worker_settings, worker_settings.queue, f"{stalled.id}.0")
    assert len(republished) == 2 and all(stalled_trace in h["traceparent"] for h in republished)
    [webhook] = _headers(worker_settings, worker_settings.webhook_queue, f"msg_{cancelled.id}_cancelled")
    assert cancelled_trace in webhook["traceparent"]
