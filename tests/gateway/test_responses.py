"""POST /v1/responses through the openai SDK: text and function calls, whole and streamed."""

from __future__ import annotations

import json

from tests.gateway.conftest import MODEL

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"], "additionalProperties": False},
}
TEXT_EVENTS = [
    "response.created", "response.in_progress", "response.output_item.added", "response.content_part.added",
    "response.output_text.delta", "response.output_text.done", "response.content_part.done",
    "response.output_item.done",
]  # fmt: skip


def collapse_deltas(types: list[str]) -> list[str]:
    return [t for i, t in enumerate(types) if not (t.endswith(".delta") and i and types[i - 1] == t)]


def test_text_response_streamed_and_whole_agree(client):
    kwargs = dict(model=MODEL, input="Name a color.", instructions="Answer briefly.", max_output_tokens=4,
                  temperature=0)
    whole = client.responses.create(**kwargs)
    assert whole.object == "response" and whole.id.startswith("resp_")
    assert whole.output_text and whole.output[0].type == "message"
    assert whole.status in ("completed", "incomplete")
    if whole.status == "incomplete":
        assert whole.incomplete_details.reason == "max_output_tokens"
    assert whole.usage.output_tokens <= 4
    assert whole.usage.total_tokens == whole.usage.input_tokens + whole.usage.output_tokens

    events = list(client.responses.create(**kwargs, stream=True))
    types = [e.type for e in events]
    assert collapse_deltas(types) == [*TEXT_EVENTS, f"response.{whole.status}"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == whole.output_text == events[-1].response.output_text


def test_function_call_round_trip(client):
    first = client.responses.create(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=40, temperature=0)
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    city = json.loads(call.arguments)["city"]
    follow_up = [
        {"role": "user", "content": "What is the weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id,
         "output": json.dumps({"city": city, "sky": "sunny"})},
    ]
    answer = client.responses.create(model=MODEL, input=follow_up, tools=[WEATHER], tool_choice="none",
                                     max_output_tokens=8, temperature=0)
    assert [item.type for item in answer.output] == ["message"]
    assert answer.output_text and "<tool_call>" not in answer.output_text


def test_streamed_function_call_events(client):
    kwargs = dict(model=MODEL, input="What is the weather in Paris?", tools=[WEATHER],
                  tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=40, temperature=0)
    whole = client.responses.create(**kwargs)
    events = list(client.responses.create(**kwargs, stream=True))
    assert collapse_deltas([e.type for e in events]) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed",
    ]  # fmt: skip
    added = events[2].item
    assert added.type == "function_call" and added.name == "get_weather" and added.arguments == ""
    arguments = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    done = events[-2].item
    assert arguments == done.arguments == events[-3].arguments == whole.output[0].arguments
    assert done.call_id == added.call_id and done.status == "completed"
    assert events[-1].response.output[0].arguments == arguments
