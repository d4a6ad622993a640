"""The openai SDK's tool loop against flowgate's chat completions.

    FLOWGATE_BASE_URL=http://127.0.0.1:8000 python integrations/examples/openai_tools.py

Small models (the bundled SmolLM2-135M) rarely choose a tool on their own, so the first turn asks for one
with `tool_choice="required"` (or set the server's `required_first_turn` policy and keep `auto`); later
turns use `auto`, so the model can answer once it has the result.
"""

from __future__ import annotations

import json

from openai import OpenAI

try:
    from integrations.examples._common import API_KEY, BASE_URL, MODEL, QUESTION, get_weather
except ImportError:  # run as a script from this folder
    from _common import API_KEY, BASE_URL, MODEL, QUESTION, get_weather

TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "maxLength": 30}},
            "required": ["city"],
        },
    },
}]
FUNCTIONS = {"get_weather": get_weather}


def run(client: OpenAI, question: str = QUESTION, *, max_turns: int = 3, max_tokens: int = 48) -> list[dict]:
    """The conversation, ending with the model's answer; tool results are in it as `tool` messages."""
    messages: list[dict] = [{"role": "user", "content": question}]
    for turn in range(max_turns):
        last_turn = turn == max_turns - 1
        reply = client.chat.completions.create(
            model=MODEL, messages=messages, tools=TOOLS, max_tokens=max_tokens, temperature=0,
            tool_choice="required" if turn == 0 else "none" if last_turn else "auto",
        )
        message = reply.choices[0].message
        messages.append(message.model_dump(exclude_none=True))
        if not message.tool_calls:
            return messages
        for call in message.tool_calls:
            result = FUNCTIONS[call.function.name](**json.loads(call.function.arguments))
            messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
    return messages


if __name__ == "__main__":
    for m in run(OpenAI(base_url=BASE_URL, api_key=API_KEY)):
        print(f"{m['role']:>9}: {m.get('content') or m.get('tool_calls')}")
