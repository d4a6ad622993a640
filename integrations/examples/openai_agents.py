"""The OpenAI Agents SDK (`openai-agents`) on flowgate's Responses API.

    FLOWGATE_BASE_URL=http://127.0.0.1:8000 python integrations/examples/openai_agents.py

The SDK's own tracing exports to OpenAI's servers: it is turned off here (flowgate's traces go to your OTLP
collector instead). `tool_choice="required"` makes the small model call the tool; the SDK resets it to `auto`
after the call (`reset_tool_choice`, its default), so the loop ends with an answer.
"""

from __future__ import annotations

import asyncio

from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    RunResult,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI

try:
    from integrations.examples import _common
except ImportError:  # run as a script from this folder
    import _common

set_tracing_disabled(True)


@function_tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return _common.get_weather(city)


def agent(client: AsyncOpenAI, *, max_tokens: int = 48) -> Agent:
    return Agent(
        name="weather",
        instructions="Answer with the weather tool's result.",
        model=OpenAIResponsesModel(model=_common.MODEL, openai_client=client),
        model_settings=ModelSettings(tool_choice="required", max_tokens=max_tokens, temperature=0),
        tools=[get_weather],
    )


async def run(client: AsyncOpenAI, question: str = _common.QUESTION) -> RunResult:
    return await Runner.run(agent(client), question, max_turns=4)


if __name__ == "__main__":
    result = asyncio.run(run(AsyncOpenAI(base_url=_common.BASE_URL, api_key=_common.API_KEY)))
    for item in result.new_items:
        print(type(item).__name__, getattr(item, "output", "") or "")
    print("answer:", result.final_output)
