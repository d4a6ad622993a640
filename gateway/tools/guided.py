"""tools + tool_choice + parallel_tool_calls + response_format -> the grammar the engine enforces.

Tool calls are xgrammar structural tags over the format in gateway.tools.markup; each call is a tag whose
begin text fixes the function name, whose content is the function's parameters schema, and whose end
closes the call:

    required / named   the output is the call(s) and nothing else: one call, or with parallel calls one
                       to max_calls separated by a newline (a call, then a "repeat" of separator + call)
    auto               free text; once the model writes `<tool_call>` it must complete a call to a
                       declared function with schema-valid arguments ("triggered_tags"); without
                       parallel calls at most one call, and nothing may follow it
    none               no call can be written: the free text may not contain the call markup
    auto + a JSON response_format
                       either the call(s) or the JSON answer

After the grammar completes only the stop token is allowed (engine.grammar).

Tools that are not `strict` get the guards of gateway.tools.guards: default bounds in their schemas and,
for required and named calls, the engine's repeat guards.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from engine.protocol import GuidedDecoding
from gateway.schemas.tools import (
    ChatTool,
    NamedToolChoice,
    ResponseFormatJSONObject,
    ResponseFormatJSONSchema,
)
from gateway.tools.coerce import as_response_format, as_tool_choice, as_tools
from gateway.tools.guards import NO_GUARDS, ToolGuards, with_default_bounds
from gateway.tools.markup import CALL_CLOSE, CALL_OPEN, CALL_SEPARATOR, CALL_TRAILER, call_header

ANY_OBJECT: dict = {"type": "object"}
NO_ARGUMENTS: dict = {"type": "object", "properties": {}, "additionalProperties": False}


def build_guided(
    tools: Any, tool_choice: Any, parallel_tool_calls: bool | None, response_format: Any,
    max_calls: int | None = None, guards: ToolGuards = NO_GUARDS,
) -> GuidedDecoding | None:
    tools = as_tools(tools)
    choice = as_tool_choice(tool_choice) or ("auto" if tools else "none")
    parallel = parallel_tool_calls is not False
    response_format = as_response_format(response_format)
    answer = _response_format_node(response_format)
    if not tools or choice == "none":
        if answer is not None:
            return _response_format_guided(response_format)
        return _structural_tag(_no_calls()) if tools else None
    if isinstance(choice, NamedToolChoice):
        tools = [t for t in tools if t.function.name == choice.function.name]
    tags = [_call_tag(tool, guards) for tool in tools]
    if choice == "auto" and answer is None:
        return _structural_tag(
            {
                "type": "triggered_tags",
                "triggers": [CALL_OPEN],
                "tags": tags,
                "stop_after_first": not parallel,
                "excludes": [CALL_CLOSE],
            }
        )
    calls = _calls(tags, parallel, max_calls)
    if choice == "auto":
        return _structural_tag({"type": "or", "elements": [calls, answer]})
    penalty = 0.0 if any(tool.function.strict for tool in tools) else guards.repeat_penalty
    return msgspec.structs.replace(_structural_tag(calls), repeat_penalty=penalty, end_on_repeat=True)


def _arguments_schema(tool: ChatTool, guards: ToolGuards) -> dict:
    """What a call's arguments must match; no `parameters` means the function takes none."""
    if tool.function.parameters is None:
        return NO_ARGUMENTS
    return tool.function.parameters if tool.function.strict else with_default_bounds(tool.function.parameters, guards)


def _call_tag(tool: ChatTool, guards: ToolGuards) -> dict:
    return {
        "type": "tag",
        "begin": call_header(tool.function.name),
        "content": {"type": "json_schema", "json_schema": _arguments_schema(tool, guards)},
        "end": CALL_TRAILER,
    }


def _calls(tags: list[dict], parallel: bool, max_calls: int | None) -> dict:
    if len(tags) == 1 and not parallel:
        return tags[0]
    if parallel and max_calls is not None:
        one = tags[0] if len(tags) == 1 else {"type": "or", "elements": tags}
        more = {"type": "sequence", "elements": [{"type": "const_string", "value": CALL_SEPARATOR}, one]}
        return {"type": "sequence", "elements": [one, {"type": "repeat", "min": 0, "max": max_calls - 1,
                                                       "content": more}]}
    return {
        "type": "tags_with_separator",
        "tags": tags,
        "separator": CALL_SEPARATOR,
        "at_least_one": True,
        "stop_after_first": not parallel,
    }


def _no_calls() -> dict:
    return {"type": "any_text", "excludes": [CALL_OPEN, CALL_CLOSE]}


def _response_format_node(response_format) -> dict | None:
    if isinstance(response_format, ResponseFormatJSONObject):
        return {"type": "json_schema", "json_schema": ANY_OBJECT}
    if isinstance(response_format, ResponseFormatJSONSchema):
        return {"type": "json_schema", "json_schema": response_format.json_schema.schema or ANY_OBJECT}
    return None


def _response_format_guided(response_format) -> GuidedDecoding:
    if (
        isinstance(response_format, ResponseFormatJSONSchema)
        and response_format.json_schema.schema is not None
    ):
        return GuidedDecoding(kind="json_schema", spec=json.dumps(response_format.json_schema.schema))
    return GuidedDecoding(kind="json_object")


def _structural_tag(format_: dict) -> GuidedDecoding:
    return GuidedDecoding(
        kind="structural_tag", spec=json.dumps({"type": "structural_tag", "format": format_})
    )
