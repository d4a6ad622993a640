"""LangChain: `ChatOpenAI(base_url=...)` with `bind_tools` and a tool loop.

    FLOWGATE_BASE_URL=http://127.0.0.1:8000 python integrations/examples/langchain_tools.py
"""

from __future__ import annotations

from langchain_core.messages import BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI

try:
    from integrations.examples import _common
except ImportError:  # run as a script from this folder
    import _common


@tool
def get_weather(city: str) -> str:
    """Current weather in a city."""
    return _common.get_weather(city)


def model(base_url: str = _common.BASE_URL, *, max_tokens: int = 48) -> ChatOpenAI:
    return ChatOpenAI(base_url=base_url, api_key=_common.API_KEY, model=_common.MODEL, temperature=0,
                      max_tokens=max_tokens, max_retries=0, timeout=120)


def run(llm: ChatOpenAI, question: str = _common.QUESTION, *, max_turns: int = 3) -> list[BaseMessage]:
    """The conversation, ending with the model's answer. The first turn requires a tool call (small models
    rarely choose one), later turns let the model decide, the last one forbids tools."""
    tools = {"get_weather": get_weather}
    messages: list[BaseMessage] = [HumanMessage(question)]
    for turn in range(max_turns):
        choice = "required" if turn == 0 else "none" if turn == max_turns - 1 else "auto"
        reply = llm.bind_tools(list(tools.values()), tool_choice=choice).invoke(messages)
        messages.append(reply)
        if not reply.tool_calls:
            return messages
        for call in reply.tool_calls:
            messages.append(ToolMessage(tools[call["name"]].invoke(call["args"]), tool_call_id=call["id"]))
    return messages


if __name__ == "__main__":
    for m in run(model()):
        print(f"{m.type:>6}: {m.content or m.tool_calls}")
