"""Telemetry shared by every flowgate process: the OpenTelemetry SDK configured from the standard OTEL_*
environment, and the bulk path's Prometheus metrics.

It lives here rather than in the gateway because Celery worker processes need it and never import the gateway
(the gateway calls the same setup). Tracing is on only when the environment asks for an exporter: with no
OTEL_* exporter settings nothing is installed and the OpenTelemetry API stays a no-op.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from celery.signals import worker_process_init
from prometheus_client import Counter, Gauge

# --- tracing -------------------------------------------------------------------------------------------------

DEFAULT_SERVICE_NAME = "flowgate"
_provider = None


def tracing_requested() -> bool:
    """OTEL_TRACES_EXPORTER names an exporter, or an OTLP endpoint is set (the exporter then defaults to otlp);
    OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none turn it off."""
    env = os.environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporters:
        return exporters != "none"
    return bool(env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_tracing(service_name: str | None = None):
    """The process's TracerProvider, set up once from the environment and made global; None when off.

    Read: OTEL_TRACES_EXPORTER (otlp, console; comma-separated), OTEL_EXPORTER_OTLP[_TRACES]_PROTOCOL
    (http/protobuf by default, or grpc), OTEL_EXPORTER_OTLP[_TRACES]_ENDPOINT / _HEADERS / _TIMEOUT (by the
    exporters), OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG] (by the SDK),
    OTEL_BSP_* (by the batch processor)."""
    global _provider
    if _provider is not None or not tracing_requested():
        return _provider
    from opentelemetry import trace
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = os.environ.get("OTEL_SERVICE_NAME") or service_name or DEFAULT_SERVICE_NAME
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: name}))
    for exporter in _exporters():
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _provider = provider
    return provider


def shutdown_tracing() -> None:
    """Flush what is buffered (at process exit)."""
    if _provider is not None:
        _provider.force_flush()


def _exporters() -> list:
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").lower().split(",") if n.strip()]
    exporters = []
    for name in names:
        if name == "otlp":
            exporters.append(_otlp_exporter())
        elif name == "console":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            exporters.append(ConsoleSpanExporter())
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER: unsupported exporter {name!r} (otlp, console or none)")
    return exporters


def _otlp_exporter():
    env = os.environ
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    elif protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL: unsupported {protocol!r} (http/protobuf or grpc)")
    return OTLPSpanExporter()


def current_trace_id() -> str | None:
    """The trace the caller is in (32 hex digits); None when tracing is off or nothing is being traced."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def tracer():
    """The bulk path's tracer: the OpenTelemetry API's no-op one until configure_tracing() installs the SDK."""
    from opentelemetry import trace

    return trace.get_tracer("flowgate.workers")


def current_traceparent() -> str | None:
    """The current span as a W3C traceparent, stored on a job so that its later tasks join its trace. The
    W3C format whatever OTEL_PROPAGATORS says: it is read back by `job_trace`, not by another service."""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


@contextmanager
def job_trace(traceparent: str | None) -> Iterator[None]:
    """Tasks published in here join the job's trace: under the current span when that is already in the
    job's trace (the chunk that finishes the job), else under the job's submit span (the recovery sweep, or a
    cancel or expiry that came with another request)."""
    if traceparent is None or traceparent.split("-")[1] == current_trace_id():
        yield
        return
    from opentelemetry import context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    token = context.attach(TraceContextTextMapPropagator().extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        context.detach(token)


_instrumented = False


def instrument_libraries(celery: bool = True, redis: bool = True, httpx: bool = True) -> None:
    """The official instrumentations for what the bulk path uses: Celery publish/run spans (trace context in
    task headers), Redis commands, outgoing httpx calls (webhooks, the gateway API) with traceparent injected.
    No-op when tracing is off. The gateway calls it at startup; prefork Celery workers in each child process
    (`worker_process_init`, connected below: the SDK's export thread does not survive a fork)."""
    global _instrumented
    if _instrumented or configure_tracing() is None:
        return
    _instrumented = True
    if celery:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor

        CeleryInstrumentor().instrument()
    if redis:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument()
    if httpx:
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        HTTPXClientInstrumentor().instrument()


@worker_process_init.connect(weak=False)
def _instrument_worker_process(**_) -> None:
    instrument_libraries()


# --- bulk metrics (multiprocess-safe when PROMETHEUS_MULTIPROC_DIR is set in every process) ------------------

BULK_JOBS = Counter("flowgate_bulk_jobs", "Bulk jobs that reached a state "
                    "(submitted, running, completed, failed, cancelled, expired)", ["state"])
BULK_LINES = Counter("flowgate_bulk_lines", "Bulk input lines finished, by outcome (done, failed)", ["outcome"])
BULK_QUEUE_DEPTH = Gauge("flowgate_bulk_queue_depth", "Lines waiting in the bulk queue, as last observed",
                         multiprocess_mode="mostrecent")
WEBHOOK_DELIVERIES = Counter("flowgate_webhook_deliveries", "Webhook delivery attempts, by outcome "
                             "(delivered, failed)", ["outcome"])


def record_job_state(state: str) -> None:
    BULK_JOBS.labels(state).inc()


def record_line(ok: bool) -> None:
    BULK_LINES.labels("done" if ok else "failed").inc()


def record_webhook(delivered: bool) -> None:
    WEBHOOK_DELIVERIES.labels("delivered" if delivered else "failed").inc()


def set_queue_depth(num_lines: int) -> None:
    BULK_QUEUE_DEPTH.set(num_lines)
