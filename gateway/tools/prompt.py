"""Chat messages (+ tools) -> the prompt text, rendered with the model's own chat template.

Messages are first brought into the shapes chat templates expect: `developer` is `system`; content is
always a string (text parts joined, null and [] become ""); assistant `tool_calls` carry `arguments` as
an object (clients replay it as JSON text; undeclared keys are kept); tool turns get the called
function's `name` next to `tool_call_id`.

A template that renders tools itself in the `<tool_call>` format (Hermes / Qwen2.5 style) gets them as
`tools=`. Any other template gets the documented fallback, plain messages every template can render:

- the tool list goes into the system message (appended to the first system message, or a new one):

      # Tools

      You may call one or more functions to assist with the user query.

      You are provided with function signatures within <tools></tools> XML tags:
      <tools>
      {"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}
      </tools>

      For each function call, return a json object with function name and arguments within
      <tool_call></tool_call> XML tags:
      <tool_call>
      {"name": <function-name>, "arguments": <args-json-object>}
      </tool_call>

- an assistant turn's calls follow its text as `<tool_call>` blocks (gateway.tools.markup);
- consecutive tool results become one user turn of `<tool_response>\\n...\\n</tool_response>` blocks.

With tool_choice "none" the tool list is left out of the prompt (the grammar forbids calls anyway), but
earlier calls and results in the conversation are still rendered.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from engine.errors import InvalidRequest
from engine.tokenizer import Tokenizer
from gateway.tools.coerce import as_tool_choice, as_tools
from gateway.tools.markup import CALL_OPEN, RESPONSE_CLOSE, RESPONSE_OPEN, render_call

FALLBACK_TOOLS_HEADER = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
FALLBACK_TOOLS_FOOTER = (
    "</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)


def render_prompt(tokenizer: Tokenizer, messages: list[Any], tools: Any, tool_choice: Any) -> str:
    messages = normalize_messages(messages)
    tools = as_tools(tools)
    tool_dicts = (
        [msgspec.to_builtins(t) for t in tools] if tools and as_tool_choice(tool_choice) != "none" else None
    )
    if template_renders_tool_calls(tokenizer):
        return tokenizer.apply_chat_template(messages, tools=tool_dicts, add_generation_prompt=True)
    return tokenizer.apply_chat_template(fallback_messages(messages, tool_dicts), add_generation_prompt=True)


def template_renders_tool_calls(tokenizer: Tokenizer) -> bool:
    templates = tokenizer.chat_template
    templates = templates.values() if isinstance(templates, dict) else [templates]
    return tokenizer.supports_tools and any(t and CALL_OPEN in t for t in templates)


def normalize_messages(messages: list[Any]) -> list[dict]:
    names_by_call_id: dict[str, str] = {}
    normalized = []
    for i, message in enumerate(msgspec.to_builtins(messages)):
        role = "system" if message.get("role") == "developer" else message.get("role")
        out = {"role": role, "content": _text(message.get("content"), f"messages[{i}].content")}
        if role == "assistant" and message.get("tool_calls"):
            out["tool_calls"] = [
                _tool_call(c, f"messages[{i}].tool_calls[{j}]") for j, c in enumerate(message["tool_calls"])
            ]
            names_by_call_id.update((c["id"], c["function"]["name"]) for c in out["tool_calls"])
        if role == "tool":
            out["tool_call_id"] = message.get("tool_call_id")
            name = message.get("name") or names_by_call_id.get(out["tool_call_id"])
            if name:
                out["name"] = name
        elif message.get("name"):
            out["name"] = message["name"]
        normalized.append(out)
    return normalized


def fallback_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """Messages carrying tools, calls and results as text (see the module docstring)."""
    out: list[dict] = []
    previous_role = None
    for message in messages:
        role, content = message["role"], message["content"]
        if role == "tool":
            block = f"{RESPONSE_OPEN}\n{content}\n{RESPONSE_CLOSE}"
            if previous_role == "tool":
                out[-1]["content"] += "\n" + block
            else:
                out.append({"role": "user", "content": block})
        elif role == "assistant" and message.get("tool_calls"):
            calls = [
                render_call(c["function"]["name"], c["function"]["arguments"]) for c in message["tool_calls"]
            ]
            out.append({"role": role, "content": "\n".join(filter(None, [content, *calls]))})
        else:
            out.append({"role": role, "content": content})
        previous_role = role
    if tools:
        listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
        block = f"{FALLBACK_TOOLS_HEADER}\n{listing}\n{FALLBACK_TOOLS_FOOTER}"
        if out and out[0]["role"] == "system":
            out[0]["content"] = f"{out[0]['content']}\n\n{block}" if out[0]["content"] else block
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def _tool_call(call: dict, param: str) -> dict:
    function = call.get("function") or {}
    arguments = function.get("arguments")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError as e:
            raise InvalidRequest(
                f"{param}.function.arguments is not valid JSON: {e}", param=f"{param}.function.arguments"
            ) from e
    return {
        "id": call.get("id"),
        "type": "function",
        "function": {"name": function.get("name"), "arguments": arguments if arguments is not None else {}},
    }


def _text(content: Any, param: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or "text" not in part:
                raise InvalidRequest("only text content parts are supported", param=param)
            texts.append(part["text"])
        return "".join(texts)
    return json.dumps(content, ensure_ascii=False)  # a tool result sent as a JSON value, not text
