"""POST /v1/completions: one engine request per prompt (each with `n` choices), whole or as SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar import Request
from litestar.response import Stream

from engine.errors import InvalidRequest
from engine.protocol import CompletionOutput, GenerateRequest, RequestOutput
from engine.tokenizer import Tokenizer
from gateway import sse
from gateway.generation import collect, merged, new_id, now, started, until_disconnect
from gateway.logprobs import completion_logprobs
from gateway.request_checks import check_sampling
from gateway.sampling import sampling_params
from gateway.schemas.completions import Completion, CompletionChoice, CompletionRequest
from gateway.schemas.usage import Usage
from gateway.telemetry import Observation
from gateway.tiering import TieredEngine


async def create_completion(
    body: CompletionRequest, model: str, engine: TieredEngine, request: Request
) -> Completion | Stream:
    check_sampling(body)
    _reject_unsupported(body)
    prompts = _prompts(body.prompt)
    _check_token_ids(prompts, engine.model_info.vocab_size)
    params = sampling_params(
        body, max_tokens=body.max_tokens, logprobs=body.logprobs, vocab_size=engine.model_info.vocab_size
    )
    completion_id = new_id("cmpl-")
    gens = [
        GenerateRequest(
            request_id=f"{completion_id}-{i}",
            prompt=p if isinstance(p, str) else None,
            prompt_token_ids=None if isinstance(p, str) else p,
            params=params,
            priority=body.priority,
        )
        for i, p in enumerate(prompts)
    ]
    echoes = [_echo(p, engine.tokenizer) if body.echo else "" for p in prompts]
    header = Completion(id=completion_id, created=now(), model=model, choices=[], service_tier=engine.service_tier)
    obs = Observation("text_completion", request=request, identity=engine.identity, request_model=body.model, model=model,
                      response_id=completion_id, params=params, priority=body.priority,
                      input_content=lambda: prompts)
    if body.stream:
        stream = await started(merged([obs.watch(engine.generate(g)) for g in gens]), request)
        chunks = stream_completions(stream, header, echoes, n=body.n, include_usage=body.include_usage)
        return Stream(sse.guarded(chunks, sse.error, header.id), media_type=sse.MEDIA_TYPE, headers=sse.HEADERS)
    outs = await until_disconnect(collect(engine, gens, obs), request)
    header.choices = [
        _choice(i * body.n + c.index, c, echoes[i]) for i, out in enumerate(outs) for c in out.outputs
    ]
    header.usage = _usage(outs, sum(len(c.token_ids) for out in outs for c in out.outputs))
    return header


def _reject_unsupported(body: CompletionRequest) -> None:
    if body.suffix:
        raise InvalidRequest("suffix is not supported", param="suffix")
    if body.best_of is not None and body.best_of != body.n:
        raise InvalidRequest("best_of must equal n (choices are not ranked)", param="best_of")
    if body.echo and body.logprobs is not None:
        raise InvalidRequest("echo with logprobs (prompt logprobs) is not supported", param="echo")


def _prompts(prompt: str | list) -> list[str | list[int]]:
    """A string, a list of strings, a list of token ids, or a list of lists of token ids."""
    if isinstance(prompt, str):
        return [prompt]
    kinds = {type(p) for p in prompt}
    if kinds == {int}:
        return [prompt]
    if kinds == {str} or kinds == {list}:
        if any(isinstance(p, list) and not p for p in prompt):
            raise InvalidRequest("a token-id prompt must not be empty", param="prompt")
        return prompt
    raise InvalidRequest("prompt must be a string, a list of strings, a list of token ids or a list of "
                         "lists of token ids", param="prompt")


def _check_token_ids(prompts: list[str | list[int]], vocab_size: int) -> None:
    """Here, not only in the engine: an id beyond 64 bits cannot even be sent to the engine process."""
    for p in prompts:
        if not isinstance(p, str) and any(not 0 <= t < vocab_size for t in p):
            raise InvalidRequest(f"token ids must be in [0, {vocab_size})", param="prompt")


def _echo(prompt: str | list[int], tokenizer: Tokenizer) -> str:
    return prompt if isinstance(prompt, str) else tokenizer.decode(prompt)


def _choice(index: int, output: CompletionOutput, echo: str) -> CompletionChoice:
    return CompletionChoice(
        index=index,
        text=echo + output.text,
        logprobs=completion_logprobs(output.logprobs, len(echo)),
        finish_reason=output.finish_reason,
    )


def _usage(outs: list[RequestOutput], completion_tokens: int) -> Usage:
    return Usage.of(
        prompt_tokens=sum(o.num_prompt_tokens for o in outs),
        completion_tokens=completion_tokens,
        cached_tokens=sum(o.num_cached_tokens for o in outs),
    )


async def stream_completions(
    stream: AsyncIterator[tuple[int, RequestOutput]], header: Completion, echoes: list[str], *, n: int,
    include_usage: bool,
) -> AsyncIterator[bytes]:
    """Text deltas per choice (the echo first), the finish reason on each choice's last chunk, usage, [DONE]."""
    text_offsets: dict[int, int] = {}
    last: dict[int, RequestOutput] = {}
    completion_tokens = 0
    async for prompt_index, out in stream:
        last[prompt_index] = out
        for output in out.outputs:
            completion_tokens += len(output.token_ids)
            index = prompt_index * n + output.index
            echo = echoes[prompt_index] if index not in text_offsets else ""
            offset = text_offsets.get(index, 0) + len(echo)
            text_offsets[index] = offset + len(output.text)
            choice = CompletionChoice(
                index=index,
                text=echo + output.text,
                logprobs=completion_logprobs(output.logprobs, offset),
                finish_reason=output.finish_reason,
            )
            yield sse.data(Completion(id=header.id, created=header.created, model=header.model, choices=[choice],
                                       service_tier=header.service_tier))
    if include_usage:
        usage = _usage(list(last.values()), completion_tokens)
        yield sse.data(Completion(id=header.id, created=header.created, model=header.model, choices=[],
                                  usage=usage, service_tier=header.service_tier))
    yield sse.DONE
