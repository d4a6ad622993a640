"""Forced tool calls on the bundled 135M model (real server, openai SDK): they always complete and are
schema-valid within small budgets, a budget below the shortest call is a 400, `auto` never ends inside a
call, repeats are dropped, parallel calls are capped, and the server's defaults are reported."""

from __future__ import annotations

import json

import jsonschema
import openai
import pytest

from gateway.tools import parse_tool_calls
from gateway.tools.markup import render_call
from tests.gateway.conftest import MODEL

WEATHER = {"type": "object", "required": ["city"],
           "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}}}
TODO = {"type": "object", "required": ["items"], "properties": {"items": {"type": "array", "items": {
    "type": "object", "required": ["title"],
    "properties": {"title": {"type": "string"}, "priority": {"enum": ["low", "high"]}}}}}}
EVENT = {"type": "object", "required": ["title", "attendees"],
         "properties": {"title": {"type": "string"}, "attendees": {"type": "array", "items": {"type": "string"}}}}
SCHEMAS = {"get_weather": WEATHER, "add_todo_items": TODO, "create_event": EVENT}
TOOLS = [{"type": "function", "function": {"name": n, "parameters": s}} for n, s in SCHEMAS.items()]
ASK = [{"role": "user", "content": "What's the weather in Paris?"}]


def named(name: str) -> dict:
    return {"type": "function", "function": {"name": name}}


def assert_complete_valid_calls(choice, allowed=tuple(SCHEMAS)):
    calls = choice.message.tool_calls
    assert calls, (choice.finish_reason, choice.message)
    assert choice.finish_reason == "tool_calls"
    for call in calls:
        assert call.function.name in allowed
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
    keys = [(c.function.name, c.function.arguments) for c in calls]
    assert len(set(keys)) == len(keys), "an identical call twice"
    return calls


def streamed(client, **kwargs) -> tuple[str | None, list[tuple[str, str]], str]:
    content, calls, finish = "", {}, None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        for choice in chunk.choices:
            delta = choice.delta
            content += delta.content or ""
            for call in delta.tool_calls or []:
                name, arguments = calls.get(call.index, ("", ""))
                calls[call.index] = (name + (call.function.name or ""), arguments + (call.function.arguments or ""))
            finish = choice.finish_reason or finish
    return content or None, [calls[i] for i in sorted(calls)], finish


@pytest.mark.parametrize(("tool_choice", "max_tokens"),
                         [("required", 64), (named("add_todo_items"), 96), (named("create_event"), 128)])
def test_forced_calls_always_complete_and_stream_the_same(client, tool_choice, max_tokens):
    kwargs = dict(model=MODEL, messages=ASK, tools=TOOLS, tool_choice=tool_choice, max_tokens=max_tokens,
                  temperature=1.0, seed=max_tokens)
    response = client.chat.completions.create(**kwargs)
    allowed = tuple(SCHEMAS) if tool_choice == "required" else (tool_choice["function"]["name"],)
    calls = assert_complete_valid_calls(response.choices[0], allowed)
    assert response.usage.completion_tokens <= max_tokens
    content, streamed_calls, finish = streamed(client, **kwargs)
    assert (content, streamed_calls, finish) == (
        response.choices[0].message.content, [(c.function.name, c.function.arguments) for c in calls], "tool_calls")


def test_a_budget_below_the_shortest_call_is_a_400_naming_max_tokens(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, tools=TOOLS, tool_choice="required", max_tokens=8)
    assert info.value.body["param"] == "max_tokens" and "shortest" in info.value.body["message"]


@pytest.mark.parametrize("max_tokens", [36, 60])
def test_auto_never_ends_inside_a_call(client, max_tokens):
    response = client.chat.completions.create(
        model=MODEL, tools=TOOLS, tool_choice="auto", max_tokens=max_tokens, logprobs=True, temperature=0,
        messages=[{"role": "system", "content": "Always answer with a tool call."}, *ASK])
    choice = response.choices[0]
    raw = "".join(t.token for t in choice.logprobs.content)  # the model's own output, markup included
    if "<tool_call>" in raw:
        assert raw.rstrip().endswith("</tool_call>") or "</tool_call>" in raw.rsplit("<tool_call>", 1)[1], raw
        assert_complete_valid_calls(choice)
    else:
        assert choice.message.content is not None


def test_parallel_tool_calls_false_is_exactly_one_call_and_the_cap_holds(client):
    ask = [{"role": "user", "content": "Weather in Paris, London, Rome, Tokyo, Lima and Cairo?"}]
    one = client.chat.completions.create(model=MODEL, messages=ask, tools=TOOLS[:1], tool_choice="required",
                                         parallel_tool_calls=False, max_tokens=128)
    assert len(assert_complete_valid_calls(one.choices[0])) == 1
    capped = client.chat.completions.create(model=MODEL, messages=ask, tools=TOOLS[:1], tool_choice="required",
                                            max_tokens=128, extra_body={"max_parallel_tool_calls": 2})
    assert 1 <= len(assert_complete_valid_calls(capped.choices[0])) <= 2


def test_repeated_calls_are_dropped_and_indices_stay_consecutive():
    paris, rome = render_call("get_weather", {"city": "Paris"}), render_call("get_weather", {"city": "Rome"})
    content, calls = parse_tool_calls("\n".join([paris, paris, rome, paris, rome]))
    assert content is None and [json.loads(c.function.arguments)["city"] for c in calls] == ["Paris", "Rome"]
    assert len(parse_tool_calls("\n".join([paris, rome]), max_calls=1)[1]) == 1


def test_server_defaults_are_applied_only_where_omitted_and_reported(http):
    noop = {"type": "function", "function": {"name": "noop"}}  # takes no arguments: a short answer
    body = {"model": MODEL, "messages": ASK, "tools": [*TOOLS, noop], "tool_choice": named("noop")}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    applied = dict(kv.split("=") for kv in response.headers["x-flowgate-defaults-applied"].split(", "))
    assert applied["temperature"] == "0.0"
    # 1024 by default, lowered to what the test server's 1,024-token context leaves after the prompt
    assert 0 < int(applied["max_tokens"]) < 1024
    explicit = http.post("/v1/chat/completions", json={**body, "max_tokens": 64, "temperature": 0.5})
    assert explicit.status_code == 200 and "x-flowgate-defaults-applied" not in explicit.headers
    no_tools = http.post("/v1/chat/completions", json={"model": MODEL, "messages": ASK, "max_tokens": 2})
    assert "x-flowgate-defaults-applied" not in no_tools.headers


def test_responses_api_caps_calls_and_reports_defaults(http):
    ask = "Weather in Paris, London, Rome, Tokyo, Lima and Cairo?"
    tools = [{"type": "function", "name": "get_weather", "parameters": WEATHER}]
    response = http.post("/v1/responses", json={"model": MODEL, "input": ask, "tools": tools,
                                                 "tool_choice": "required", "max_tool_calls": 1})
    assert response.status_code == 200, response.text
    calls = [item for item in response.json()["output"] if item["type"] == "function_call"]
    assert len(calls) == 1
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER)
    assert "temperature=0.0" in response.headers["x-flowgate-defaults-applied"]
