"""One trace from the caller to the engine's steps: a real `flowgate serve` exporting over OTLP/HTTP to a real
receiver in this process, the official openai SDK as the client, continuing the client's traceparent."""

from __future__ import annotations

import os
import secrets

import pytest

from tests.gateway.conftest import MODEL, ROOT, Server, running_server
from tests.otlp_receiver import OTLPReceiver

API_KEY = "sk-flowgate-test-" + secrets.token_hex(8)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module")
def receiver():
    receiver = OTLPReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="module")
def traced_server(receiver, tmp_path_factory):
    log_path = tmp_path_factory.mktemp("traced") / "server.log"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLOWGATE_KV_CACHE_BYTES": str(32 << 20),
        "FLOWGATE_MAX_MODEL_LEN": "1024",
        "FLOWGATE_LOG_LEVEL": "warning",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "flowgate-under-test",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    with running_server(log_path, env) as server:
        yield server


def _client(server: Server, traceparent: str | None = None):
    from openai import OpenAI

    headers = {"traceparent": traceparent, "tracestate": "vendor=n8n"} if traceparent else {}
    return OpenAI(base_url=f"{server.url}/v1", api_key=API_KEY, max_retries=0, timeout=120,
                  default_headers=headers)


def _by_name(spans: list[dict], name: str) -> list[dict]:
    return [s for s in spans if s["name"] == name]


def _children(spans: list[dict], parent: dict) -> list[dict]:
    return [s for s in spans if s["parent_span_id"] == parent["span_id"]]


def test_chat_with_tool_call_is_one_trace_down_to_engine_steps(traced_server, receiver):
    trace_id, caller_span_id = secrets.token_hex(16), secrets.token_hex(8)
    client = _client(traced_server, f"00-{trace_id}-{caller_span_id}-01")
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the weather in Paris?"}],
        tools=[WEATHER_TOOL], tool_choice="required", max_tokens=40, temperature=0)
    assert response.choices[0].message.tool_calls

    def complete(spans):
        mine = [s for s in spans if s["trace_id"] == trace_id]
        return _by_name(mine, "engine.decode") and _by_name(mine, f"chat {MODEL}") and _by_name(
            mine, "POST /v1/chat/completions")

    spans = [s for s in receiver.wait_for(complete) if s["trace_id"] == trace_id]
    [server_span] = _by_name(spans, "POST /v1/chat/completions")
    assert server_span["parent_span_id"] == caller_span_id  # the caller's trace continues
    assert server_span["resource"]["service.name"] == "flowgate-under-test"

    [chat] = _by_name(spans, f"chat {MODEL}")
    assert chat["parent_span_id"] == server_span["span_id"]
    a = chat["attributes"]
    assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "flowgate"
    assert a["gen_ai.request.model"] == MODEL and a["gen_ai.request.max_tokens"] == 40
    assert a["gen_ai.request.temperature"] == 0.0 and a["gen_ai.request.top_p"] == 1.0
    assert a["gen_ai.response.id"] == response.id
    # What the client got (as the OpenAI client instrumentations record it), not the engine's "stop".
    assert a["gen_ai.response.finish_reasons"] == ["tool_calls"] == [response.choices[0].finish_reason]
    assert a["gen_ai.usage.input_tokens"] == response.usage.prompt_tokens
    assert a["gen_ai.usage.output_tokens"] == response.usage.completion_tokens
    assert a["gen_ai.usage.cache_read.input_tokens"] == response.usage.prompt_tokens_details.cached_tokens
    assert a["server.address"] == "127.0.0.1" and a["server.port"] == int(traced_server.url.rsplit(":", 1)[1])
    assert a["flowgate.key_id"] == "anonymous" and a["flowgate.tier"] == "paid" and a["flowgate.priority"] == 0
    assert a["flowgate.tool_choice"] == "required" and a["flowgate.preemptions"] == 0
    assert a["flowgate.grammar.compile_ms"] > 0  # the tool-call grammar compiled for this request
    assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # content is opt-in

    [engine] = _children(spans, chat)
    assert engine["name"] == "engine.request" and engine["attributes"]["flowgate.request_id"] == response.id
    names = [e[0] for e in engine["events"]]
    assert names[0] == "queued" and names[-1] == "finished" and {"scheduled", "first_token"} <= set(names)
    steps = _children(spans, engine)
    assert {s["name"] for s in steps} == {"engine.queue", "engine.grammar_compile", "engine.prefill",
                                          "engine.decode"}
    prefill = _by_name(steps, "engine.prefill")
    assert sum(s["attributes"]["flowgate.prefill.num_tokens"] for s in prefill) == response.usage.prompt_tokens
    # Engine timestamps crossed a process boundary: they must land inside the gateway's span, in order.
    assert chat["start"] <= engine["start"] <= engine["end"] <= chat["end"] <= server_span["end"]
    for step in steps:
        assert engine["start"] <= step["start"] <= step["end"] <= engine["end"]
    [decode] = _by_name(steps, "engine.decode")
    assert max(s["end"] for s in prefill) <= decode["start"]

    for payload in receiver.payloads:  # never the key, in any form the exporter sent
        assert API_KEY.encode() not in payload


def test_streamed_completions_get_one_engine_span_per_prompt(traced_server, receiver):
    trace_id = secrets.token_hex(16)
    client = _client(traced_server, f"00-{trace_id}-{secrets.token_hex(8)}-01")
    stream = client.completions.create(model=MODEL, prompt=["Once upon a time", "The sea is"], max_tokens=4,
                                       temperature=0, stream=True, stream_options={"include_usage": True})
    [usage] = [chunk.usage for chunk in stream if chunk.usage]

    def complete(spans):
        return len(_by_name([s for s in spans if s["trace_id"] == trace_id], "engine.request")) == 2 and _by_name(
            [s for s in spans if s["trace_id"] == trace_id], f"text_completion {MODEL}")

    spans = [s for s in receiver.wait_for(complete) if s["trace_id"] == trace_id]
    [span] = _by_name(spans, f"text_completion {MODEL}")
    assert span["attributes"]["gen_ai.operation.name"] == "text_completion"
    assert span["attributes"]["gen_ai.usage.input_tokens"] == usage.prompt_tokens
    assert span["attributes"]["gen_ai.usage.output_tokens"] == usage.completion_tokens == 8
    assert span["attributes"]["gen_ai.response.finish_reasons"] == ["length", "length"]
    assert all(s["parent_span_id"] == span["span_id"] for s in _by_name(spans, "engine.request"))


def test_without_traceparent_a_new_trace_starts_and_probes_are_untraced(traced_server, receiver):
    client = _client(traced_server)
    response = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}],
                                              max_tokens=2, temperature=0)
    spans = receiver.wait_for(lambda spans: any(
        s["attributes"].get("gen_ai.response.id") == response.id for s in spans))
    [chat] = [s for s in spans if s["attributes"].get("gen_ai.response.id") == response.id]
    [server_span] = [s for s in spans if s["span_id"] == chat["parent_span_id"]]
    assert server_span["parent_span_id"] == ""  # a root: nobody upstream
    traced_server.stats()  # /ready
    import httpx

    assert httpx.get(f"{traced_server.url}/metrics", timeout=30).status_code == 200
    receiver.wait_for(lambda spans: True)
    assert not any(s["name"].startswith(("GET /ready", "GET /metrics", "GET /health")) for s in receiver.spans)
