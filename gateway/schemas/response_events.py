"""The server-sent events of a streamed /v1/responses call, in the order they are sent:

response.created, response.in_progress,
  per output item: response.output_item.added,
    message:        response.content_part.added, response.output_text.delta*, response.output_text.done,
                    response.content_part.done
    function_call:  response.function_call_arguments.delta*, response.function_call_arguments.done
  response.output_item.done,
response.completed (or response.incomplete when max_output_tokens cut it short; error on failure)
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.schemas.responses import OutputItem, OutputText, ResponseObject


class Event(msgspec.Struct, kw_only=True, tag_field="type"):
    sequence_number: int = 0  # set by the stream as it sends


class ResponseCreated(Event, kw_only=True, tag="response.created"):
    response: ResponseObject


class ResponseInProgress(Event, kw_only=True, tag="response.in_progress"):
    response: ResponseObject


class ResponseCompleted(Event, kw_only=True, tag="response.completed"):
    response: ResponseObject


class ResponseIncomplete(Event, kw_only=True, tag="response.incomplete"):
    response: ResponseObject


class OutputItemAdded(Event, kw_only=True, tag="response.output_item.added"):
    output_index: int
    item: OutputItem


class OutputItemDone(Event, kw_only=True, tag="response.output_item.done"):
    output_index: int
    item: OutputItem


class ContentPartAdded(Event, kw_only=True, tag="response.content_part.added"):
    item_id: str
    output_index: int
    content_index: int = 0
    part: OutputText


class ContentPartDone(Event, kw_only=True, tag="response.content_part.done"):
    item_id: str
    output_index: int
    content_index: int = 0
    part: OutputText


class OutputTextDelta(Event, kw_only=True, tag="response.output_text.delta"):
    item_id: str
    output_index: int
    content_index: int = 0
    delta: str
    logprobs: list[Any] = []


class OutputTextDone(Event, kw_only=True, tag="response.output_text.done"):
    item_id: str
    output_index: int
    content_index: int = 0
    text: str
    logprobs: list[Any] = []


class FunctionCallArgumentsDelta(Event, kw_only=True, tag="response.function_call_arguments.delta"):
    item_id: str
    output_index: int
    delta: str


class FunctionCallArgumentsDone(Event, kw_only=True, tag="response.function_call_arguments.done"):
    item_id: str
    output_index: int
    name: str
    arguments: str


class ErrorEvent(Event, kw_only=True, tag="error"):
    code: str | None
    message: str
    param: str | None = None
