"""What a real n8n 2.41.1 sends, replayed against the live server in the default suite (no n8n needed): the
requests in data/n8n-2.41.1-requests.json were captured from the templates' e2e runs. Each n8n quirk the
gateway must handle is checked where n8n would break on it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

REQUESTS = json.loads((Path(__file__).parent / "data/n8n-2.41.1-requests.json").read_text())


def _post(http, path, body):
    response = http.post(path, json=body)
    assert response.status_code == 200, response.text
    return response


def _sse(response) -> list[dict]:
    events = [line[len("data: "):] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    return [json.loads(e) for e in events[:-1]]


def _tool_schemas(body) -> dict[str, dict]:
    return {t["function"]["name"]: t["function"]["parameters"] for t in body["tools"]}


def test_the_capture_has_n8ns_quirks():
    """The replays below only mean something if the capture shows what n8n really sends."""
    first = REQUESTS["agent_chat_completions_first_turn"]
    assert first["stream"] is False and first["tool_choice"] == "required"
    for schema in _tool_schemas(first).values():
        assert schema["$schema"].startswith("http://json-schema.org/") and schema["additionalProperties"] is False
    assert all(t["function"]["strict"] is False for t in first["tools"])
    replayed = [m for m in REQUESTS["agent_chat_completions_after_tools"]["messages"] if m["role"] == "assistant"]
    assert replayed and all(m["content"] == [] for m in replayed)
    call = replayed[0]["tool_calls"][0]
    assert json.loads(call["function"]["arguments"])["id"] == call["id"]  # an extra key in the arguments
    tool = next(m for m in REQUESTS["agent_chat_completions_after_tools"]["messages"] if m["role"] == "tool")
    assert json.loads(tool["content"])[0].keys() == {"response"}
    assert "tool_choice" not in REQUESTS["agent_responses_first_turn"]


def test_http_request_node_chat(http):
    reply = _post(http, "/v1/chat/completions", REQUESTS["http_request_chat"]).json()
    assert reply["choices"][0]["message"]["content"]


def test_agent_first_turn_is_a_schema_valid_call(http):
    body = REQUESTS["agent_chat_completions_first_turn"]
    choice = _post(http, "/v1/chat/completions", body).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    schemas = _tool_schemas(body)
    for call in choice["message"]["tool_calls"]:
        jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])


def test_agent_turn_after_replayed_tool_results_answers(http):
    body = REQUESTS["agent_chat_completions_after_tools"]
    choice = _post(http, "/v1/chat/completions", body).json()["choices"][0]
    assert choice["finish_reason"] in ("stop", "length", "tool_calls")
    assert choice["message"]["content"] or choice["message"].get("tool_calls")


def test_streamed_tool_call_is_one_n8n_keeps(http):
    """n8n drops a streamed call whose first argument delta already repeats the whole call: the first delta
    must carry id and name with empty arguments, the fragments after it only arguments."""
    body = REQUESTS["streaming_agent_first_turn"]
    chunks = _sse(_post(http, "/v1/chat/completions", body))
    deltas = [d for c in chunks for choice in c["choices"] for d in choice["delta"].get("tool_calls") or []]
    assert deltas
    calls: dict[int, dict] = {}
    for d in deltas:
        if d["index"] not in calls:
            assert d["id"] and d["function"]["name"] and d["function"]["arguments"] == ""
            calls[d["index"]] = {"name": d["function"]["name"], "arguments": ""}
        else:
            assert "id" not in d and "name" not in d.get("function", {})
            calls[d["index"]]["arguments"] += d["function"]["arguments"]
    schemas = _tool_schemas(body)
    for call in calls.values():
        jsonschema.validate(json.loads(call["arguments"]), schemas[call["name"]])
    finishes = [choice["finish_reason"] for c in chunks for choice in c["choices"] if choice["finish_reason"]]
    assert finishes == ["tool_calls"]
    assert chunks[-1]["usage"]["completion_tokens"] > 0  # stream_options.include_usage


def test_streamed_answer_after_tools(http):
    chunks = _sse(_post(http, "/v1/chat/completions", REQUESTS["streaming_agent_after_tools"]))
    text = "".join(choice["delta"].get("content") or "" for c in chunks for choice in c["choices"])
    finishes = [choice["finish_reason"] for c in chunks for choice in c["choices"] if choice["finish_reason"]]
    assert finishes and (text or finishes == ["tool_calls"])


def test_structured_output_parses_as_the_parser_expects(http):
    body = REQUESTS["structured_output_responses"]
    reply = _post(http, "/v1/responses", body).json()
    [message] = [item for item in reply["output"] if item["type"] == "message"]
    parsed = json.loads(message["content"][0]["text"])
    jsonschema.validate(parsed, body["text"]["format"]["schema"])
    assert set(parsed["output"]) == {"city", "country"}


@pytest.mark.parametrize("name", ["agent_responses_first_turn"])
def test_responses_agent_turn_is_served(http, name):
    """Without tool_choice the small model may answer in prose (see docs/n8n.md, tool policy): the request
    itself — n8n's tool shapes, `text: {}` — must be accepted and answered."""
    reply = _post(http, "/v1/responses", REQUESTS[name]).json()
    assert reply["status"] in ("completed", "incomplete") and reply["output"]
