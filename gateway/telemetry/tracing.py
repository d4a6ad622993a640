"""The gateway's tracing: on only when the OTEL_* environment asks for it (workers.telemetry reads it), then
Litestar's own OpenTelemetry plugin continues incoming W3C traceparent/tracestate in a server span.

Off, nothing is installed: no middleware, no tracer, no span objects; handlers check `tracer() is None`.
"""

from __future__ import annotations

import os

from opentelemetry import trace
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.trace import Tracer

from workers.telemetry import configure_tracing, instrument_libraries

SEMCONV_SCHEMA_URL = "https://opentelemetry.io/schemas/1.44.0"  # GenAI conventions as of semconv v1.44.0
UNTRACED_PATHS = ["/metrics", "/health", "/ready"]  # probes and scrapes would drown the traces
_tracer: Tracer | None = None


def setup() -> list:
    """Configure tracing from the environment; the Litestar plugins to install (none when it is off)."""
    global _tracer
    provider = configure_tracing()
    if provider is None:
        _tracer = None
        return []
    from litestar.plugins.opentelemetry import OpenTelemetryConfig, OpenTelemetryPlugin

    _tracer = provider.get_tracer("flowgate.gateway", schema_url=SEMCONV_SCHEMA_URL)
    instrument_libraries()  # Celery publishes carry the trace to the bulk workers; Redis and httpx calls show
    config = OpenTelemetryConfig(
        tracer_provider=provider,
        exclude=[f"^{p}$" for p in UNTRACED_PATHS],
        # One span per request: the per-ASGI-message send/receive spans cost more than they tell.
        exclude_spans=["receive", "send"],
        scope_span_details_extractor=_route_span_details,
    )
    return [OpenTelemetryPlugin(config)]


def _route_span_details(scope) -> tuple[str, dict]:
    """The server span starts before routing, so it is named by method alone (semconv's name without a route),
    not by the raw path (Litestar's default: an id in a span name makes every job its own operation, and
    unknown paths unbounded names). `name_server_span` adds the route template once routing has found it."""
    return str(scope.get("method", "")), {}


def name_server_span(method: str, route: str) -> None:
    """`GET /v1/jobs/{job_id}` and `http.route`, on the server span of the request being handled (if traced)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.update_name(f"{method} {route}")
        span.set_attribute(HTTP_ROUTE, route)


def tracer() -> Tracer | None:
    return _tracer


def capture_content() -> bool:
    """Prompts and completions go into spans only when asked: FLOWGATE_TRACE_CONTENT=true, or the GenAI
    instrumentations' own OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes")
               for name in ("FLOWGATE_TRACE_CONTENT", "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"))
