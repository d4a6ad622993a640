"""What chat completions and the Responses API share: messages (+ tools, response_format) -> the prompt and
the grammar the engine enforces; the output text -> content and tool calls, whole or streamed."""

from __future__ import annotations

from dataclasses import dataclass

import jinja2

from engine.errors import InvalidRequest
from engine.protocol import GuidedDecoding
from engine.tokenizer import Tokenizer
from gateway.schemas.chat import ChatDelta, ChatMessage, FunctionCallDelta, ToolCallDelta
from gateway.schemas.tools import ChatTool, ResponseFormat, ToolCall, ToolChoice
from gateway.tools import (
    ContentDelta,
    ToolCallParser,
    ToolCallStart,
    build_guided,
    parse_tool_calls,
    render_prompt,
    validate_response_format,
    validate_tools,
)
from gateway.tools.guards import NO_GUARDS, ToolGuards


@dataclass(frozen=True)
class ChatPlan:
    prompt: str
    guided: GuidedDecoding | None
    with_tools: bool  # tools were given, so the output is parsed for calls
    max_calls: int | None = None  # calls past it (and repeats of an earlier call) are dropped

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """The whole output as (content, tool calls); content is None when only calls were made."""
        return parse_tool_calls(text, self.max_calls) if self.with_tools else (text, [])

    def stream_parser(self) -> ToolCallStream | TextStream:
        return ToolCallStream(self.max_calls) if self.with_tools else TextStream()


def plan_chat(
    tokenizer: Tokenizer,
    messages: list[ChatMessage],
    *,
    tools: list[ChatTool] | None = None,
    tool_choice: ToolChoice | None = None,
    parallel_tool_calls: bool = True,
    response_format: ResponseFormat | None = None,
    max_parallel_tool_calls: int | None = None,
    guards: ToolGuards = NO_GUARDS,
) -> ChatPlan:
    """`max_parallel_tool_calls` caps the calls of one answer (in the grammar where it can, for required and
    named calls; in the parser always); without parallel calls the cap is one."""
    validate_tools(tools, tool_choice, parallel_tool_calls)
    validate_response_format(response_format)
    try:
        prompt = render_prompt(tokenizer, messages, tools, tool_choice)
    except jinja2.TemplateError as exc:
        raise InvalidRequest(f"the model's chat template rejected the messages: {exc}", param="messages") from exc
    max_calls = max_parallel_tool_calls if parallel_tool_calls is not False else 1
    guided = build_guided(tools, tool_choice, parallel_tool_calls, response_format, max_calls, guards)
    return ChatPlan(prompt=prompt, guided=guided, with_tools=bool(tools), max_calls=max_calls)


class TextStream:
    """Streamed text -> chat deltas, for output that cannot contain tool calls."""

    has_tool_calls = False

    def feed(self, text: str) -> list[ChatDelta]:
        return [ChatDelta(content=text)] if text else []

    def finish(self) -> list[ChatDelta]:
        return []


class ToolCallStream:
    """Streamed text -> chat deltas: content, then per call its index, id and name (arguments "") followed
    by argument fragments, so the fragments add up to the non-streamed `arguments`."""

    def __init__(self, max_calls: int | None = None):
        self.parser = ToolCallParser(max_calls)

    @property
    def has_tool_calls(self) -> bool:
        return bool(self.parser.tool_calls)

    def feed(self, text: str) -> list[ChatDelta]:
        return [_delta(event) for event in self.parser.feed(text)]

    def finish(self) -> list[ChatDelta]:
        return [_delta(event) for event in self.parser.finish()]


def _delta(event) -> ChatDelta:
    if isinstance(event, ContentDelta):
        return ChatDelta(content=event.text)
    if isinstance(event, ToolCallStart):
        call = ToolCallDelta(index=event.index, id=event.id, type="function",
                             function=FunctionCallDelta(name=event.name, arguments=""))
    else:
        call = ToolCallDelta(index=event.index, function=FunctionCallDelta(arguments=event.arguments))
    return ChatDelta(tool_calls=[call])
