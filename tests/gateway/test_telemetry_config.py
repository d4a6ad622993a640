"""Tracing is configured from the standard OTEL_* variables only, and off it installs nothing."""

from __future__ import annotations

import pytest

from workers import telemetry

OTEL_VARS = ("OTEL_SDK_DISABLED", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
             "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")


@pytest.fixture
def env(monkeypatch):
    for name in OTEL_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize(("settings", "on"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
    ({"OTEL_TRACES_EXPORTER": "console"}, True),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, False),
])
def test_tracing_follows_the_otel_environment(env, settings, on):
    for name, value in settings.items():
        env.setenv(name, value)
    assert telemetry.tracing_requested() is on


def test_off_installs_no_middleware_and_no_tracer(env):
    from litestar.plugins.opentelemetry import OpenTelemetryPlugin

    from gateway.app import create_app
    from gateway.telemetry import tracing

    app = create_app()
    assert not any(isinstance(p, OpenTelemetryPlugin) for p in app.plugins)
    assert tracing.tracer() is None


@pytest.mark.parametrize(("protocol", "module"), [
    (None, "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
    ("http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
    ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
])
def test_otlp_protocol_picks_the_exporter(env, protocol, module):
    env.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    if protocol:
        env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    [exporter] = telemetry._exporters()
    assert type(exporter).__module__ == module
    exporter.shutdown()


def test_unknown_protocol_is_refused(env):
    env.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(ValueError, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        telemetry._exporters()


def test_current_trace_id_is_what_a_job_records():
    from opentelemetry.sdk.trace import TracerProvider

    assert telemetry.current_trace_id() is None
    with TracerProvider().get_tracer("test").start_as_current_span("submit") as span:
        assert telemetry.current_trace_id() == format(span.get_span_context().trace_id, "032x")
