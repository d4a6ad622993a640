"""Observation in process with the real SDK and an in-memory exporter: content is opt-in, cancellation is
marked, and the engine's events become spans with their own timestamps."""

from __future__ import annotations

import asyncio
import time

import pytest
from litestar import Request
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from engine.protocol import CompletionOutput, EngineEvent, RequestOutput, SamplingParams
from gateway.auth.identity import Identity
from gateway.telemetry import observe


@pytest.fixture
def exporter(monkeypatch):
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(observe, "tracer", lambda: provider.get_tracer("test"))
    monkeypatch.delenv("FLOWGATE_TRACE_CONTENT", raising=False)
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    return exporter


def _observation(**overrides) -> observe.Observation:
    request = Request({"type": "http", "server": ("127.0.0.1", 8000), "headers": []})
    kwargs = dict(request=request, identity=Identity(key_id="key_abc", tier="free"), request_model="m",
                  model="m", response_id="chatcmpl-1", params=SamplingParams(max_tokens=4), priority=1,
                  input_content=lambda: [{"role": "user", "content": "secret plans"}])
    return observe.Observation("chat", **kwargs | overrides)


async def _engine_stream(finish: bool = True):
    t = time.time_ns()
    yield RequestOutput(request_id="chatcmpl-1", outputs=[CompletionOutput(index=0, text="Hel", token_ids=[1])],
                        finished=False, num_prompt_tokens=5)
    if not finish:
        await asyncio.sleep(10)
    events = [EngineEvent("queued", t), EngineEvent("scheduled", t + 1_000), EngineEvent("prefill", t + 5_000, 0, 5, 4_000),
              EngineEvent("preempted", t + 6_000), EngineEvent("resumed", t + 7_000),
              EngineEvent("first_token", t + 8_000), EngineEvent("finished", t + 9_000)]
    yield RequestOutput(request_id="chatcmpl-1", outputs=[CompletionOutput(index=0, text="lo", token_ids=[2],
                                                                           finish_reason="stop")],
                        finished=True, num_prompt_tokens=5, num_cached_tokens=2, events=events)


async def _drain(obs, stream):
    async for _ in obs.watch(stream):
        pass
    await asyncio.sleep(0)  # spans are recorded in a loop callback


async def test_content_only_when_opted_in(exporter, monkeypatch):
    await _drain(_observation(), _engine_stream())
    [chat] = [s for s in exporter.get_finished_spans() if s.name == "chat m"]
    assert "gen_ai.input.messages" not in chat.attributes and "gen_ai.output.messages" not in chat.attributes
    exporter.clear()
    monkeypatch.setenv("FLOWGATE_TRACE_CONTENT", "true")
    await _drain(_observation(), _engine_stream())
    [chat] = [s for s in exporter.get_finished_spans() if s.name == "chat m"]
    assert "secret plans" in chat.attributes["gen_ai.input.messages"]
    assert '"Hello"' in chat.attributes["gen_ai.output.messages"]


async def test_engine_events_become_spans_on_the_engine_clock(exporter):
    await _drain(_observation(), _engine_stream())
    spans = {s.name: s for s in exporter.get_finished_spans()}
    chat, engine = spans["chat m"], spans["engine.request"]
    assert engine.parent.span_id == chat.context.span_id
    assert chat.attributes["flowgate.key_id"] == "key_abc" and chat.attributes["flowgate.tier"] == "free"
    assert chat.attributes["flowgate.preemptions"] == 1 and chat.attributes["gen_ai.usage.cache_read.input_tokens"] == 2
    queued = engine.start_time
    assert spans["engine.queue"].start_time == queued and spans["engine.queue"].end_time == queued + 1_000
    assert (spans["engine.prefill"].start_time, spans["engine.prefill"].end_time) == (queued + 1_000, queued + 5_000)
    assert (spans["engine.decode"].start_time, spans["engine.decode"].end_time) == (queued + 8_000, queued + 9_000)
    assert [e.name for e in engine.events] == ["queued", "scheduled", "preempted", "resumed", "first_token",
                                               "finished"]


async def test_a_client_that_leaves_marks_the_span_cancelled(exporter):
    obs = _observation()
    stream = obs.watch(_engine_stream(finish=False))
    await anext(stream)
    await stream.aclose()
    await asyncio.sleep(0)
    [chat] = [s for s in exporter.get_finished_spans() if s.name == "chat m"]
    assert chat.attributes["error.type"] == "cancelled"
    assert not [s for s in exporter.get_finished_spans() if s.name.startswith("engine.")]
