"""What OpenAI rejects with a 400 that a schema cannot express: each check names the `param` OpenAI names.

Deliberately more lenient than OpenAI (README, "OpenAI compatibility"): unknown fields are ignored rather
than rejected, a body without a Content-Type is read as JSON, and an assistant turn's tool calls need not
all be answered before the next user turn (agent frameworks drop unanswered calls on retries).
"""

from __future__ import annotations

from engine.errors import InvalidRequest
from gateway.schemas.chat import ChatMessage
from gateway.schemas.sampling import SamplingFields


def check_sampling(body: SamplingFields) -> None:
    """stop and stream_options, shared by chat and completions."""
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []  # the schema caps the count
    if any(s == "" for s in stops):
        raise InvalidRequest("stop sequences must not be empty strings", param="stop")
    if body.stream_options is not None and not body.stream:
        raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                             param="stream_options")


def check_tools_not_empty(tools: list | None) -> None:
    if tools is not None and not tools:
        raise InvalidRequest("Invalid 'tools': empty array. Expected an array with minimum length 1, but got an "
                             "empty array instead.", param="tools")


def check_tool_messages(messages: list[ChatMessage], param: str = "messages") -> None:
    """Every tool message carries a tool_call_id that a call of the assistant turn before it made.
    `param` is "messages" for chat (indices are message indices) and "input" for the Responses API."""
    open_calls: set[str] = set()
    for i, message in enumerate(messages):
        where = f"{param}[{i}]" if param == "messages" else param
        if message.role == "tool":
            if message.tool_call_id is None:
                raise InvalidRequest("Missing parameter 'tool_call_id': messages with role 'tool' must have a "
                                     "'tool_call_id'.", param=f"{where}.tool_call_id" if param == "messages"
                                     else param)
            if message.tool_call_id not in open_calls:
                raise InvalidRequest(
                    "Invalid parameter: messages with role 'tool' must be a response to a preceding message "
                    f"with 'tool_calls' (no call has id {message.tool_call_id!r}).",
                    param=f"{where}.tool_call_id" if param == "messages" else param)
            continue
        open_calls = {c.id for c in message.tool_calls or []} if message.role == "assistant" else set()
