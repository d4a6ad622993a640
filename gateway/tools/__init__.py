"""Tool calling and structured outputs for the gateway: validate the request, render the prompt, build the
grammar the engine enforces, and parse the output (streamed or whole) back into content and tool calls.

Torch-free: imports only msgspec, jsonschema, the engine's public interface and gateway.schemas.tools.
"""

from gateway.tools.guided import build_guided
from gateway.tools.parser import (
    ContentDelta,
    ToolCallArgumentsDelta,
    ToolCallEvent,
    ToolCallParser,
    ToolCallStart,
    parse_tool_calls,
)
from gateway.tools.prompt import render_prompt
from gateway.tools.validation import validate_response_format, validate_tools

__all__ = [
    "ContentDelta",
    "ToolCallArgumentsDelta",
    "ToolCallEvent",
    "ToolCallParser",
    "ToolCallStart",
    "build_guided",
    "parse_tool_calls",
    "render_prompt",
    "validate_response_format",
    "validate_tools",
]
