"""Function tools, tool choice, tool calls and response_format in OpenAI's Chat Completions shapes."""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class FunctionDefinition(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema for the arguments object
    strict: bool | None = None  # true: reject schema keywords the grammar cannot enforce


class ChatTool(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: FunctionDefinition


class NamedFunction(msgspec.Struct, kw_only=True):
    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class FunctionCall(msgspec.Struct, kw_only=True):
    name: str
    arguments: str  # the arguments object as JSON text


class ToolCall(msgspec.Struct, kw_only=True):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class JSONSchemaSpec(msgspec.Struct, kw_only=True, omit_defaults=True):
    name: str
    description: str | None = None
    schema: dict[str, Any] | None = None  # None: any JSON object
    strict: bool | None = None


class ResponseFormatText(msgspec.Struct, tag="text", tag_field="type"):
    pass


class ResponseFormatJSONObject(msgspec.Struct, tag="json_object", tag_field="type"):
    pass


class ResponseFormatJSONSchema(msgspec.Struct, tag="json_schema", tag_field="type"):
    json_schema: JSONSchemaSpec


ResponseFormat = ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema
