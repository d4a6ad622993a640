"""POST /v1/responses: the chat machinery underneath, answered as Response output items or as the
Responses event stream (see gateway.schemas.response_events for the order)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
from litestar import Request, Response
from litestar.response import Stream
from msgspec.structs import replace

from engine.errors import InvalidRequest
from engine.protocol import GenerateRequest, RequestOutput, SamplingParams
from gateway import sse
from gateway.auth.policy import default_tool_choice
from gateway.chat_core import plan_chat
from gateway.generation import collect, new_id, now, params_named, started, until_disconnect
from gateway.request_checks import check_tool_messages, check_tools_not_empty
from gateway.request_defaults import request_defaults, resolve
from gateway.responses_input import chat_messages, chat_response_format, chat_tool_choice, chat_tools
from gateway.schemas.chat import ChatDelta
from gateway.schemas.response_events import (
    ContentPartAdded,
    ContentPartDone,
    ErrorEvent,
    Event,
    FunctionCallArgumentsDelta,
    FunctionCallArgumentsDone,
    OutputItemAdded,
    OutputItemDone,
    OutputTextDelta,
    OutputTextDone,
    ResponseCompleted,
    ResponseCreated,
    ResponseIncomplete,
    ResponseInProgress,
)
from gateway.schemas.responses import (
    FunctionCallItem,
    IncompleteDetails,
    InputTokensDetails,
    OutputItem,
    OutputMessage,
    OutputText,
    ResponseObject,
    ResponsesRequest,
    ResponseUsage,
    TextConfig,
)
from gateway.schemas.tools import ToolCall
from gateway.telemetry import Observation
from gateway.tiering import TieredEngine


async def create_response(
    body: ResponsesRequest, model: str, engine: TieredEngine, request: Request
) -> ResponseObject | Stream:
    if body.previous_response_id is not None:
        raise InvalidRequest("previous_response_id is not supported: responses are not stored",
                             param="previous_response_id")
    check_tools_not_empty(body.tools)
    messages, tools = chat_messages(body), chat_tools(body)
    check_tool_messages(messages, param="input")
    tool_choice = default_tool_choice(chat_tool_choice(body.tool_choice), tools, messages, engine.tool_choice_default)
    resolved = resolve(request_defaults(request), max_tokens=body.max_output_tokens, temperature=body.temperature,
                       has_tools=bool(body.tools) and tool_choice != "none",
                       max_parallel_tool_calls=body.max_tool_calls)
    plan = plan_chat(
        engine.tokenizer,
        messages,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=chat_response_format(body.text),
        max_parallel_tool_calls=resolved.max_parallel_tool_calls,
        guards=resolved.tool_guards,
    )
    if "max_tokens" in resolved.applied:
        resolved = resolved.within_context(engine.model_info.max_model_len - len(engine.tokenizer.encode(plan.prompt)))
    params = SamplingParams(
        temperature=1.0 if resolved.temperature is None else resolved.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        max_tokens=resolved.max_tokens,
        guided=plan.guided,
    )
    params.validate()
    gen = GenerateRequest(request_id=new_id("resp_"), prompt=plan.prompt, params=params, priority=body.priority)
    skeleton = replace(_skeleton(body, model, gen.request_id, params), service_tier=engine.service_tier)
    # The Responses API is a chat operation in the GenAI conventions.
    obs = Observation("chat", request=request, identity=engine.identity, request_model=body.model, model=model,
                      response_id=gen.request_id, params=params, priority=gen.priority,
                      tool_choice=skeleton.tool_choice if isinstance(skeleton.tool_choice, str) else "function",
                      input_content=lambda: msgspec.to_builtins(body.input))
    with params_named(prompt="input", max_tokens="max_output_tokens"):
        if body.stream:
            stream = await started(obs.watch(engine.generate(gen)), request)
            events = ResponseStream(skeleton)
            return Stream(sse.guarded(events.run(stream, plan.stream_parser()), events.error_event, skeleton.id),
                          media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **resolved.headers})
        [out] = await until_disconnect(collect(engine, [gen], obs), request)
    [choice] = out.outputs
    content, calls = plan.parse(choice.text)
    finished = _finished(skeleton, _output_items(content, calls), out, len(choice.token_ids), choice.finish_reason)
    return Response(finished, headers=resolved.headers) if resolved.headers else finished


def _skeleton(body: ResponsesRequest, model: str, response_id: str, params: SamplingParams) -> ResponseObject:
    return ResponseObject(
        id=response_id,
        created_at=now(),
        status="in_progress",
        model=model,
        output=[],
        instructions=body.instructions,
        max_output_tokens=params.max_tokens,
        temperature=params.temperature,
        top_p=params.top_p,
        tool_choice=body.tool_choice or ("auto" if body.tools else "none"),
        tools=body.tools or [],
        parallel_tool_calls=body.parallel_tool_calls,
        text=body.text or TextConfig(),
        metadata=body.metadata or {},
    )


def _output_items(content: str | None, calls: list[ToolCall]) -> list[OutputItem]:
    items: list[OutputItem] = []
    if content:
        items.append(OutputMessage(id=new_id("msg_"), status="completed", content=[OutputText(text=content)]))
    items += [
        FunctionCallItem(id=new_id("fc_"), call_id=c.id, name=c.function.name, arguments=c.function.arguments,
                         status="completed")
        for c in calls
    ]
    return items


def _finished(skeleton: ResponseObject, output: list[OutputItem], out: RequestOutput, output_tokens: int,
              finish_reason: str | None) -> ResponseObject:
    truncated = finish_reason == "length" and not any(isinstance(i, FunctionCallItem) for i in output)
    return replace(
        skeleton,
        status="incomplete" if truncated else "completed",
        output=output,
        incomplete_details=IncompleteDetails(reason="max_output_tokens") if truncated else None,
        usage=ResponseUsage(
            input_tokens=out.num_prompt_tokens,
            input_tokens_details=InputTokensDetails(cached_tokens=out.num_cached_tokens),
            output_tokens=output_tokens,
            total_tokens=out.num_prompt_tokens + output_tokens,
        ),
    )


class ResponseStream:
    """Chat deltas -> Responses events: text opens a message item, each tool call its own function_call
    item; an item is closed (its .done events sent) when the next one opens or the output ends."""

    def __init__(self, skeleton: ResponseObject):
        self.skeleton = skeleton
        self.sequence_number = 0
        self.output: list[OutputItem] = []
        self.open: OutputMessage | FunctionCallItem | None = None
        self.text = ""

    async def run(self, stream: AsyncIterator[RequestOutput], parser) -> AsyncIterator[bytes]:
        yield self._emit(ResponseCreated(response=self.skeleton))
        yield self._emit(ResponseInProgress(response=self.skeleton))
        last, output_tokens, finish_reason = None, 0, None
        async for out in stream:
            last = out
            for choice in out.outputs:
                output_tokens += len(choice.token_ids)
                finish_reason = choice.finish_reason or finish_reason
                deltas = parser.feed(choice.text) + (parser.finish() if choice.finish_reason else [])
                for delta in deltas:
                    for event in self._on_delta(delta):
                        yield event
        for event in self._close():
            yield event
        final = _finished(self.skeleton, self.output, last, output_tokens, finish_reason)
        done = ResponseIncomplete if final.status == "incomplete" else ResponseCompleted
        yield self._emit(done(response=final))

    def error_event(self, message: str, code: str | None, param: str | None) -> bytes:
        return self._emit(ErrorEvent(code=code, message=message, param=param))

    def _emit(self, event: Event) -> bytes:
        event.sequence_number = self.sequence_number
        self.sequence_number += 1
        return sse.event(type(event).__struct_config__.tag, event)

    def _on_delta(self, delta: ChatDelta) -> list[bytes]:
        events = []
        if delta.content:
            if not isinstance(self.open, OutputMessage):
                events += self._close()
                events += self._open(OutputMessage(id=new_id("msg_"), status="in_progress", content=[]))
            self.text += delta.content
            events.append(self._emit(OutputTextDelta(item_id=self.open.id, output_index=len(self.output) - 1,
                                                     delta=delta.content)))
        for call in delta.tool_calls or []:
            if call.id is not None:
                events += self._close()
                events += self._open(FunctionCallItem(id=new_id("fc_"), call_id=call.id, name=call.function.name,
                                                      arguments="", status="in_progress"))
            fragment = call.function.arguments if call.function else None
            if fragment:
                self.open.arguments += fragment
                events.append(self._emit(FunctionCallArgumentsDelta(
                    item_id=self.open.id, output_index=len(self.output) - 1, delta=fragment)))
        return events

    def _open(self, item: OutputMessage | FunctionCallItem) -> list[bytes]:
        self.open = item
        self.output.append(item)
        index = len(self.output) - 1
        events = [self._emit(OutputItemAdded(output_index=index, item=item))]
        if isinstance(item, OutputMessage):
            events.append(self._emit(ContentPartAdded(item_id=item.id, output_index=index, part=OutputText(text=""))))
        return events

    def _close(self) -> list[bytes]:
        item, index = self.open, len(self.output) - 1
        if item is None:
            return []
        self.open = None
        events = []
        if isinstance(item, OutputMessage):
            part = OutputText(text=self.text)
            self.text = ""
            events.append(self._emit(OutputTextDone(item_id=item.id, output_index=index, text=part.text)))
            events.append(self._emit(ContentPartDone(item_id=item.id, output_index=index, part=part)))
            item.content = [part]
        else:
            events.append(self._emit(FunctionCallArgumentsDone(
                item_id=item.id, output_index=index, name=item.name, arguments=item.arguments)))
        item.status = "completed"
        events.append(self._emit(OutputItemDone(output_index=index, item=item)))
        return events
