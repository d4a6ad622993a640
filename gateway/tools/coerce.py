"""Tools, tool_choice and response_format arrive as the gateway's request structs or as plain dicts (the
Responses API and tests build them); both become the structs of gateway.schemas.tools here."""

from __future__ import annotations

from typing import Any

import msgspec

from engine.errors import InvalidRequest
from gateway.schemas.tools import ChatTool, ResponseFormat, ToolChoice


def as_tools(tools: Any) -> list[ChatTool]:
    return _convert(tools, list[ChatTool], "tools") if tools else []


def as_tool_choice(tool_choice: Any) -> ToolChoice | None:
    return None if tool_choice is None else _convert(tool_choice, ToolChoice, "tool_choice")


def as_response_format(response_format: Any) -> ResponseFormat | None:
    if response_format is None:
        return None
    return _convert(response_format, ResponseFormat, "response_format")


def _convert(value: Any, target: Any, param: str):
    try:
        return msgspec.convert(msgspec.to_builtins(value), target)
    except msgspec.ValidationError as e:
        raise InvalidRequest(f"invalid {param}: {e}", param=param) from e
