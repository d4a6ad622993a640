"""POST /v1/chat/completions: one engine request (with `n` choices), answered whole or as SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import msgspec
from litestar import Request, Response
from litestar.response import Stream
from msgspec.structs import replace

from engine.errors import InvalidRequest
from engine.protocol import CompletionOutput, GenerateRequest, RequestOutput
from gateway import sse
from gateway.auth.policy import default_tool_choice
from gateway.chat_core import ChatPlan, plan_chat
from gateway.generation import collect, new_id, now, params_named, started, until_disconnect
from gateway.logprobs import chat_logprobs
from gateway.request_checks import check_sampling, check_tool_messages, check_tools_not_empty
from gateway.request_defaults import request_defaults, resolve
from gateway.sampling import sampling_params
from gateway.schemas.chat import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatDelta,
    ChunkChoice,
)
from gateway.schemas.usage import Usage
from gateway.telemetry import Observation
from gateway.tiering import TieredEngine


async def create_chat_completion(
    body: ChatCompletionRequest, model: str, engine: TieredEngine, request: Request
) -> ChatCompletion | Stream:
    check_sampling(body)
    check_tools_not_empty(body.tools)
    check_tool_messages(body.messages)
    has_tools = bool(body.tools) and body.tool_choice != "none"
    resolved = resolve(request_defaults(request), max_tokens=body.max_completion_tokens or body.max_tokens,
                       temperature=body.temperature, has_tools=has_tools,
                       max_parallel_tool_calls=body.max_parallel_tool_calls)
    plan = plan_chat(
        engine.tokenizer,
        body.messages,
        tools=body.tools,
        tool_choice=default_tool_choice(body.tool_choice, body.tools, body.messages, engine.tool_choice_default),
        parallel_tool_calls=body.parallel_tool_calls,
        response_format=body.response_format,
        max_parallel_tool_calls=resolved.max_parallel_tool_calls,
        guards=resolved.tool_guards,
    )
    if "max_tokens" in resolved.applied:
        resolved = resolved.within_context(engine.model_info.max_model_len - len(engine.tokenizer.encode(plan.prompt)))
    gen = GenerateRequest(
        request_id=new_id("chatcmpl-"),
        prompt=plan.prompt,
        params=sampling_params(
            replace(body, temperature=resolved.temperature),
            max_tokens=resolved.max_tokens,
            logprobs=_num_logprobs(body),
            vocab_size=engine.model_info.vocab_size,
            guided=plan.guided,
        ),
        priority=body.priority,
    )
    header = ChunkHeader(id=gen.request_id, model=model, service_tier=engine.service_tier)
    obs = Observation("chat", request=request, identity=engine.identity, request_model=body.model, model=model,
                      response_id=gen.request_id, params=gen.params, priority=gen.priority,
                      tool_choice=_tool_choice_mode(body), input_content=lambda: msgspec.to_builtins(body.messages),
                      answered_reason=lambda text, reason: _finish_reason(plan.parse(text)[1], reason))
    with params_named(prompt="messages"):
        if body.stream:
            stream = await started(obs.watch(engine.generate(gen)), request)
            chunks = stream_chat(stream, header, plan, n=body.n, include_usage=body.include_usage)
            return Stream(sse.guarded(chunks, sse.error, header.id), media_type=sse.MEDIA_TYPE,
                          headers={**sse.HEADERS, **resolved.headers})
        [out] = await until_disconnect(collect(engine, [gen], obs), request)
    completion = ChatCompletion(
        id=header.id,
        created=header.created,
        model=model,
        choices=[_choice(c, plan) for c in out.outputs],
        usage=_usage(out, sum(len(c.token_ids) for c in out.outputs)),
        service_tier=header.service_tier,
    )
    return Response(completion, headers=resolved.headers) if resolved.headers else completion


def _tool_choice_mode(body: ChatCompletionRequest) -> str:
    """none | auto | required | function (a named one): what the span and dashboards group by."""
    if body.tool_choice is None:
        return "auto" if body.tools else "none"
    return body.tool_choice if isinstance(body.tool_choice, str) else "function"


def _num_logprobs(body: ChatCompletionRequest) -> int | None:
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequest("top_logprobs requires logprobs to be true", param="top_logprobs")
    return (body.top_logprobs or 0) if body.logprobs else None


def _choice(output: CompletionOutput, plan: ChatPlan) -> ChatChoice:
    content, tool_calls = plan.parse(output.text)
    if content is None and not tool_calls:
        content = ""  # null content only ever goes with tool calls
    return ChatChoice(
        index=output.index,
        message=AssistantMessage(role="assistant", content=content, tool_calls=tool_calls or None),
        logprobs=chat_logprobs(output.logprobs),
        finish_reason=_finish_reason(tool_calls, output.finish_reason),
    )


def _finish_reason(tool_calls: list, engine_reason: str | None) -> str:
    return "tool_calls" if tool_calls else engine_reason or "stop"


def _usage(out: RequestOutput, completion_tokens: int) -> Usage:
    return Usage.of(
        prompt_tokens=out.num_prompt_tokens,
        completion_tokens=completion_tokens,
        cached_tokens=out.num_cached_tokens,
    )


@dataclass(frozen=True, slots=True)
class ChunkHeader:
    """What every chunk of one stream repeats."""

    id: str
    model: str
    service_tier: str | None = None
    created: int = field(default_factory=now)

    def chunk(self, choices: list[ChunkChoice], usage: Usage | None = None) -> bytes:
        return sse.data(ChatCompletionChunk(id=self.id, created=self.created, model=self.model,
                                            choices=choices, usage=usage, service_tier=self.service_tier))


async def stream_chat(
    stream: AsyncIterator[RequestOutput], header: ChunkHeader, plan: ChatPlan, *, n: int, include_usage: bool
) -> AsyncIterator[bytes]:
    """Role first, then content (or tool-call) deltas, a finish chunk per choice, usage if asked, [DONE]."""
    for index in range(n):
        yield header.chunk([ChunkChoice(index=index, delta=ChatDelta(role="assistant", content=""))])
    parsers = [plan.stream_parser() for _ in range(n)]
    completion_tokens = 0
    last = None
    async for out in stream:
        last = out
        for output in out.outputs:
            completion_tokens += len(output.token_ids)
            for chunk in _output_chunks(header, output, parsers[output.index]):
                yield chunk
    if include_usage and last is not None:
        yield header.chunk([], usage=_usage(last, completion_tokens))
    yield sse.DONE


def _output_chunks(header: ChunkHeader, output: CompletionOutput, parser) -> list[bytes]:
    deltas = parser.feed(output.text)
    if output.finish_reason is not None:
        deltas += parser.finish()
    logprobs = chat_logprobs(output.logprobs) if output.logprobs else None
    if logprobs is not None and not deltas:
        deltas = [ChatDelta()]
    chunks = [
        header.chunk([ChunkChoice(index=output.index, delta=d, logprobs=logprobs if i == 0 else None)])
        for i, d in enumerate(deltas)
    ]
    if output.finish_reason is not None:
        reason = "tool_calls" if parser.has_tool_calls else output.finish_reason
        chunks.append(header.chunk([ChunkChoice(index=output.index, delta=ChatDelta(), finish_reason=reason)]))
    return chunks
