"""What agent clients do with tools and structured output, against the real server: the openai SDK's tool
loop and structured parsing, streamed tool-call deltas, and LangChain's bind_tools round trip."""

from __future__ import annotations

import json

import jsonschema
import pydantic

from tests.gateway.conftest import MODEL

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 20}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


def weather(city: str) -> str:
    return json.dumps({"city": city, "sky": "sunny", "celsius": 21})


def test_tool_loop_runs_to_a_final_answer(client):
    messages = [QUESTION]
    for turn in range(3):
        reply = client.chat.completions.create(
            model=MODEL, messages=messages, tools=[WEATHER], tool_choice="required" if turn == 0 else "auto",
            max_tokens=40, temperature=0)
        choice = reply.choices[0]
        if not choice.message.tool_calls:
            break
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        # Replay the turn as agent frameworks do: content null next to the calls, arguments as JSON text.
        messages.append(choice.message.model_dump(exclude_none=True) | {"content": None})
        for call in choice.message.tool_calls:
            arguments = json.loads(call.function.arguments)
            jsonschema.validate(arguments, WEATHER["function"]["parameters"])
            messages.append({"role": "tool", "tool_call_id": call.id, "content": weather(**arguments)})
    else:  # the model kept calling: ask for the answer without tools, as a loop with a turn limit does
        reply = client.chat.completions.create(model=MODEL, messages=messages, tools=[WEATHER],
                                               tool_choice="none", max_tokens=20, temperature=0)
    assert any(m["role"] == "tool" for m in messages if isinstance(m, dict))
    final = reply.choices[0]
    assert final.message.tool_calls is None and final.message.content
    assert final.finish_reason in ("stop", "length")
    assert "<tool_call>" not in final.message.content


def test_streamed_tool_call_deltas_add_up_to_the_non_streamed_call(client):
    kwargs = dict(model=MODEL, messages=[QUESTION], tools=[WEATHER], tool_choice="required", max_tokens=40,
                  temperature=0.8, seed=11)
    whole = client.chat.completions.create(**kwargs).choices[0]
    calls: dict[int, dict] = {}
    finish = None
    for chunk in client.chat.completions.create(**kwargs, stream=True):
        delta = chunk.choices[0].delta
        assert not delta.content
        for d in delta.tool_calls or []:
            if d.id is not None:
                assert d.index not in calls and d.type == "function" and d.function.arguments == ""
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
            else:
                calls[d.index]["arguments"] += d.function.arguments
        finish = chunk.choices[0].finish_reason or finish
    assert finish == whole.finish_reason == "tool_calls"
    assert [(c["name"], c["arguments"]) for c in calls.values()] == [
        (c.function.name, c.function.arguments) for c in whole.message.tool_calls
    ]


class Person(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=12)
    age: int = pydantic.Field(ge=0, le=120)


def test_json_schema_response_format_is_parsed_and_valid(client):
    completion = client.chat.completions.parse(
        model=MODEL, messages=[{"role": "user", "content": "Describe a person as JSON."}],
        response_format=Person, max_tokens=40, temperature=0)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    jsonschema.validate(json.loads(choice.message.content), Person.model_json_schema())
    assert isinstance(choice.message.parsed, Person)


def test_langchain_bind_tools_round_trip(server):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_core.tools import tool
    from langchain_openai import ChatOpenAI

    @tool
    def get_weather(city: str) -> str:
        """Current weather in a city."""
        return weather(city)

    llm = ChatOpenAI(model=MODEL, base_url=f"{server.url}/v1", api_key="unused", temperature=0, max_tokens=40,
                     max_retries=0)
    messages = [HumanMessage("What is the weather in Paris?")]
    ai = llm.bind_tools([get_weather], tool_choice="get_weather").invoke(messages)
    [call] = ai.tool_calls
    assert call["name"] == "get_weather" and isinstance(call["args"]["city"], str)
    messages += [ai, ToolMessage(get_weather.invoke(call["args"]), tool_call_id=call["id"])]
    answer = llm.bind_tools([get_weather], tool_choice="none").invoke(messages)
    assert answer.tool_calls == [] and isinstance(answer.content, str) and answer.content
