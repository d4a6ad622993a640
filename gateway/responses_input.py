"""A Responses API request in chat terms: input items -> chat messages, flat tools -> chat tools."""

from __future__ import annotations

from engine.errors import InvalidRequest
from gateway.schemas.chat import ChatMessage
from gateway.schemas.responses import FunctionToolChoice, InputText, ResponsesRequest, TextConfig
from gateway.schemas.tools import (
    ChatTool,
    FunctionCall,
    FunctionDefinition,
    JSONSchemaSpec,
    NamedFunction,
    NamedToolChoice,
    ResponseFormat,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
    ToolCall,
    ToolChoice,
)


def chat_messages(body: ResponsesRequest) -> list[ChatMessage]:
    """`instructions` first as a system message; consecutive function_call items (and the assistant text
    before them) become one assistant turn with tool_calls; function_call_output items become tool turns."""
    messages = [ChatMessage(role="system", content=body.instructions)] if body.instructions else []
    if isinstance(body.input, str):
        return [*messages, ChatMessage(role="user", content=body.input)]
    for i, item in enumerate(body.input):
        if item.type == "message":
            messages.append(ChatMessage(role=_required(item.role, i, "role"), content=_text(item.content)))
        elif item.type == "function_call":
            call = ToolCall(
                id=_required(item.call_id, i, "call_id"),
                function=FunctionCall(name=_required(item.name, i, "name"), arguments=item.arguments or "{}"),
            )
            _append_call(messages, call)
        else:
            output = _required(item.output, i, "output")
            messages.append(ChatMessage(role="tool", tool_call_id=_required(item.call_id, i, "call_id"),
                                        content=_text(output)))
    return messages


def _append_call(messages: list[ChatMessage], call: ToolCall) -> None:
    last = messages[-1] if messages else None
    if last is not None and last.role == "assistant":
        last.tool_calls = [*(last.tool_calls or []), call]
    else:
        messages.append(ChatMessage(role="assistant", content=None, tool_calls=[call]))


def _required(value, index: int, field: str):
    if value is None:
        raise InvalidRequest(f"input[{index}] needs `{field}`", param=f"input[{index}].{field}")
    return value


def _text(content: str | list[InputText] | None) -> str:
    if isinstance(content, list):
        return "".join(part.text for part in content)
    return content or ""


def chat_tools(body: ResponsesRequest) -> list[ChatTool] | None:
    if not body.tools:
        return None
    return [
        ChatTool(function=FunctionDefinition(
            name=t.name, description=t.description, parameters=t.parameters, strict=t.strict))
        for t in body.tools
    ]


def chat_tool_choice(choice: str | FunctionToolChoice | None) -> ToolChoice | None:
    if isinstance(choice, FunctionToolChoice):
        return NamedToolChoice(function=NamedFunction(name=choice.name))
    return choice


def chat_response_format(text: TextConfig | None) -> ResponseFormat | None:
    if text is None or text.format.type == "text":
        return None
    fmt = text.format
    if fmt.type == "json_object":
        return ResponseFormatJSONObject()
    if fmt.name is None:
        raise InvalidRequest("a json_schema text format needs a `name`", param="text.format.name")
    return ResponseFormatJSONSchema(json_schema=JSONSchemaSpec(
        name=fmt.name, description=fmt.description, schema=fmt.schema, strict=fmt.strict))
