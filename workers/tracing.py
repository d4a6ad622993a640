"""W3C trace context across the queue: a chunk's task carries the `traceparent` of the request that submitted
it (opentelemetry-instrumentation-celery writes it into the task headers and continues it in the worker).
Spans and metrics around publish, task and webhook paths hang off the task entry points in workers/tasks.py."""

from __future__ import annotations

import logging

logger = logging.getLogger("flowgate.workers")
_instrumented = False


def instrument_celery() -> None:
    """Idempotent, per process; a no-op where the instrumentation package is not installed."""
    global _instrumented
    if _instrumented:
        return
    try:
        from opentelemetry.instrumentation.celery import CeleryInstrumentor
    except ImportError:
        logger.debug("opentelemetry-instrumentation-celery is not installed: no trace context in tasks")
        return
    CeleryInstrumentor().instrument()
    _instrumented = True
