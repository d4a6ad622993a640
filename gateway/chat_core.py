"""What chat completions and the Responses API share: messages -> prompt + grammar, and text -> content
and tool calls (one parser per choice, fed the streamed text)."""

from __future__ import annotations

from dataclasses import dataclass

from engine.protocol import GuidedDecoding
from engine.tokenizer import Tokenizer
from gateway.schemas.chat import ChatDelta, ChatMessage, ResponseFormat, Tool, ToolCall, ToolChoice


@dataclass(frozen=True)
class ChatPlan:
    prompt: str
    guided: GuidedDecoding | None
    tools: list[Tool] | None  # set when the output may contain tool calls

    def parse(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """The final text split into content and tool calls (content None when only calls were made)."""
        return text, []

    def stream_parser(self) -> TextStream:
        return TextStream()


def plan_chat(
    tokenizer: Tokenizer,
    messages: list[ChatMessage],
    *,
    tools: list[Tool] | None = None,
    tool_choice: ToolChoice | None = None,
    parallel_tool_calls: bool = True,
    response_format: ResponseFormat | None = None,
) -> ChatPlan:
    prompt = tokenizer.apply_chat_template([_as_dict(m) for m in messages])
    return ChatPlan(prompt=prompt, guided=None, tools=None)


def _as_dict(message: ChatMessage) -> dict:
    return {"role": "system" if message.role == "developer" else message.role, "content": message.text}


class TextStream:
    """Streamed text -> chat deltas, for a choice whose output cannot contain tool calls."""

    has_tool_calls = False

    def feed(self, text: str) -> list[ChatDelta]:
        return [ChatDelta(content=text)] if text else []

    def finish(self) -> list[ChatDelta]:
        return []
