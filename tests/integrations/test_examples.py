"""Each agent-framework example in integrations/examples runs its tool loop against the live server: the
model calls the tool, the tool's result goes back, and the model answers."""

from __future__ import annotations

import json

from integrations.examples import _common

WEATHER = json.loads(_common.get_weather("Paris"))


def _is_weather(text: str) -> bool:
    return json.loads(text) == WEATHER


def test_openai_sdk_tool_loop(client):
    from integrations.examples import openai_tools

    messages = openai_tools.run(client)
    calls = [c for m in messages for c in m.get("tool_calls") or []]
    assert [c["function"]["name"] for c in calls][:1] == ["get_weather"]
    assert json.loads(calls[0]["function"]["arguments"]) == {"city": "Paris"}
    assert any(m["role"] == "tool" and _is_weather(m["content"]) for m in messages)
    assert messages[-1]["role"] == "assistant" and messages[-1]["content"]


def test_langchain_bind_tools_loop(server):
    from integrations.examples import langchain_tools

    messages = langchain_tools.run(langchain_tools.model(f"{server.url}/v1"))
    assert messages[1].tool_calls[0]["name"] == "get_weather"
    assert messages[1].tool_calls[0]["args"] == {"city": "Paris"}
    assert messages[2].type == "tool" and _is_weather(messages[2].content)
    assert messages[-1].type == "ai" and messages[-1].content and not messages[-1].tool_calls


async def test_openai_agents_sdk_on_the_responses_api(async_client):
    from agents.items import MessageOutputItem, ToolCallItem, ToolCallOutputItem

    from integrations.examples import openai_agents

    result = await openai_agents.run(async_client)
    kinds = [type(item) for item in result.new_items]
    assert kinds[:2] == [ToolCallItem, ToolCallOutputItem] and kinds[-1] is MessageOutputItem
    call = result.new_items[0].raw_item
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert _is_weather(result.new_items[1].output)
    assert isinstance(result.final_output, str) and result.final_output
