"""The 400s OpenAI answers that a lenient server would let through with a 200 (issue 8), each naming its
param; and the well-formed versions of the same requests still succeed."""

from __future__ import annotations

import pytest

from tests.gateway.conftest import MODEL
from tests.gateway.test_errors import HI, assert_error, chat

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
ASKED = {"role": "user", "content": "Weather in Paris?"}
CALLED = {"role": "assistant", "content": None, "tool_calls": [CALL]}
ANSWER = {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(messages=[ASKED, CALLED, {"role": "tool", "content": "sunny"}]), "messages[2].tool_call_id"),
        (chat(messages=[ASKED, {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]),
         "messages[1].tool_call_id"),
        (chat(messages=[ASKED, CALLED, {**ANSWER, "tool_call_id": "call_2"}]), "messages[2].tool_call_id"),
        (chat(messages=[ASKED, CALLED, ANSWER, {"role": "user", "content": "and?"}, ANSWER]),
         "messages[4].tool_call_id"),
        (chat(tools=[]), "tools"),
        (chat(stop=["a", "b", "c", "d", "e"]), "stop"),
        (chat(stop=""), "stop"),
        (chat(stop=["a", ""]), "stop"),
        (chat(stream_options={"include_usage": True}), "stream_options"),
    ],
)
def test_chat_request_openai_rejects_is_a_400(http, body, param):
    assert_error(http.post("/v1/chat/completions", json=body), 400, param=param)


def test_completions_and_responses_check_the_same(http):
    completion = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}
    assert_error(http.post("/v1/completions", json={**completion, "stop": [""]}), 400, param="stop")
    assert_error(http.post("/v1/completions", json={**completion, "stream_options": {"include_usage": True}}),
                 400, param="stream_options")
    response = {"model": MODEL, "input": "Hi", "max_output_tokens": 2}
    assert_error(http.post("/v1/responses", json={**response, "tools": []}), 400, param="tools")
    orphan = [{"role": "user", "content": "Hi"}, {"type": "function_call_output", "call_id": "c9", "output": "x"}]
    assert_error(http.post("/v1/responses", json={**response, "input": orphan}), 400, param="input")


def test_a_text_plain_body_is_a_400(http):
    import json

    response = http.post("/v1/chat/completions", content=json.dumps(chat()),
                         headers={"content-type": "text/plain"})
    assert "application/json" in assert_error(response, 400)["message"]
    ok = http.post("/v1/chat/completions", content=json.dumps(chat()),
                   headers={"content-type": "application/json; charset=utf-8"})
    assert ok.status_code == 200, ok.text


def test_the_well_formed_versions_are_accepted(client):
    messages = [ASKED, CALLED, ANSWER, {"role": "user", "content": "Thanks"}]
    for kwargs in ({"messages": messages, "tools": [TOOL]}, {"messages": HI, "stop": ["a", "b", "c", "d"]},
                   {"messages": HI, "stream": True, "stream_options": {"include_usage": True}}):
        response = client.chat.completions.create(model=MODEL, max_tokens=2, temperature=0, **kwargs)
        if kwargs.get("stream"):
            assert list(response)[-1].usage is not None
        else:
            assert response.choices[0].message is not None
