"""Traces (OpenTelemetry, GenAI conventions) and metrics (Prometheus) for the gateway. See docs/observability.md."""

from gateway.telemetry.metrics import record_rate_limit_refusal
from gateway.telemetry.observe import Observation

__all__ = ["Observation", "record_rate_limit_refusal"]
