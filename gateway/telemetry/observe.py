"""One API request observed: a GenAI span (`chat {model}` / `text_completion {model}`) around its engine
requests, their engine spans, and the latency and token metrics by tier.

GenAI semantic conventions followed: OpenTelemetry semconv v1.44.0 (gen_ai.* is in development status there).
The span carries the identity's key id and tier, never a key; content only when capture_content() says so.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable

from litestar import Request
from opentelemetry.trace import SpanKind, Status, StatusCode

from engine.protocol import EngineEvent, RequestOutput, SamplingParams
from gateway.auth.identity import Identity
from gateway.telemetry import metrics
from gateway.telemetry.engine_spans import record_engine_spans
from gateway.telemetry.tracing import capture_content, tracer

PROVIDER = "flowgate"


class Observation:
    """Wrap each engine stream with `watch()`; the span ends when the last watched stream ends.

    Spans and metrics are recorded in a loop callback after the last stream ends, not in line: the answer
    (and the [DONE] of a stream) goes out first, so tracing costs the caller no latency it can avoid."""

    def __init__(self, operation: str, *, request: Request, identity: Identity, request_model: str, model: str,
                 response_id: str, params: SamplingParams, priority: int, tool_choice: str | None = None,
                 input_content: Callable[[], object] | None = None,
                 answered_reason: Callable[[str, str], str] | None = None):
        """`answered_reason(whole text, engine reason)`: the finish reason the API answers, when it differs from
        why the engine stopped (chat: `tool_calls` when the text holds calls); the span reports what the client
        got, as the OpenAI client instrumentations do."""
        self.identity = identity
        self.answered_reason = answered_reason
        self.pending = 0
        self.finish_reasons: list[str] = []
        self.input_tokens = self.output_tokens = self.cached_tokens = self.preemptions = 0
        self.grammar_compile_ms = 0.0
        self.finished: list[tuple[RequestOutput, dict[int, int]]] = []
        self.texts: dict[int, str] | None = None
        self.span = None
        t = tracer()
        if t is None:
            return
        server = request.scope.get("server") or (None, None)
        attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.request.model": request_model,
            "gen_ai.response.model": model,
            "gen_ai.response.id": response_id,
            "gen_ai.request.temperature": params.temperature,
            "gen_ai.request.top_p": params.top_p,
            "server.address": server[0],
            "server.port": server[1],
            "flowgate.key_id": identity.key_id,
            "flowgate.tier": identity.tier,
            "flowgate.priority": priority,
        }
        if params.max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = params.max_tokens
        if params.n != 1:
            attributes["gen_ai.request.choice.count"] = params.n
        if params.seed is not None:
            attributes["gen_ai.request.seed"] = params.seed
        if tool_choice is not None:
            attributes["flowgate.tool_choice"] = tool_choice
        if capture_content() and input_content is not None:
            attributes["gen_ai.input.messages"] = json.dumps(input_content())
            self.texts = {}
        self.span = t.start_span(f"{operation} {model}", kind=SpanKind.INTERNAL,
                                 attributes={k: v for k, v in attributes.items() if v is not None})

    async def watch(self, stream: AsyncIterator[RequestOutput]) -> AsyncIterator[RequestOutput]:
        self.pending += 1
        error: BaseException | None = None
        tokens_by_index: dict[int, int] = {}  # this engine request's output tokens per completion
        # Its texts per completion, kept only when a span will report the answered finish reasons from them.
        texts: dict[int, str] | None = {} if self.span is not None and self.answered_reason else None
        try:
            async for out in stream:
                self._fold(out, tokens_by_index, texts)
                yield out
        except BaseException as exc:
            error = exc
            raise
        finally:
            self.pending -= 1
            if self.pending == 0:
                try:
                    asyncio.get_running_loop().call_soon(self._end, error)
                except RuntimeError:  # finalized outside the loop (a dropped stream at shutdown)
                    self._end(error)

    def _fold(self, out: RequestOutput, tokens_by_index: dict[int, int], texts: dict[int, str] | None) -> None:
        for c in out.outputs:
            self.output_tokens += len(c.token_ids)
            tokens_by_index[c.index] = tokens_by_index.get(c.index, 0) + len(c.token_ids)
            if texts is not None:
                texts[c.index] = texts.get(c.index, "") + c.text
            if c.finish_reason is not None:
                reason = c.finish_reason
                self.finish_reasons.append(reason if texts is None else self.answered_reason(texts.pop(c.index), reason))
            if self.texts is not None:
                self.texts[c.index] = self.texts.get(c.index, "") + c.text
        if out.finished:
            self.input_tokens += out.num_prompt_tokens
            self.cached_tokens += out.num_cached_tokens
            self.finished.append((out, tokens_by_index))

    def _record_engine(self, out: RequestOutput, tokens_by_index: dict[int, int]) -> None:
        tier, key_id = self.identity.tier, self.identity.key_id
        metrics.PROMPT_TOKENS.labels(tier, key_id).inc(out.num_prompt_tokens)
        metrics.CACHED_PROMPT_TOKENS.labels(tier, key_id).inc(out.num_cached_tokens)
        metrics.GENERATION_TOKENS.labels(tier, key_id).inc(sum(tokens_by_index.values()))
        events = out.events or []
        _observe_latencies(tier, events, tokens_by_index)
        preemptions = sum(e.name == "preempted" for e in events)
        if preemptions:
            self.preemptions += preemptions
            metrics.REQUEST_PREEMPTIONS.labels(tier).inc(preemptions)
        for e in events:
            if e.name == "grammar_compiled":
                self.grammar_compile_ms += e.duration_ns / 1e6
                metrics.GRAMMAR_COMPILE.observe(e.duration_ns / 1e9)
        if self.span is not None:
            record_engine_spans(tracer(), self.span, out.request_id, events)

    def _end(self, error: BaseException | None) -> None:
        for out, tokens_by_index in self.finished:
            self._record_engine(out, tokens_by_index)
        span = self.span
        if span is None:
            return
        span.set_attributes({
            "gen_ai.response.finish_reasons": self.finish_reasons,
            "gen_ai.usage.input_tokens": self.input_tokens,
            "gen_ai.usage.output_tokens": self.output_tokens,
            "gen_ai.usage.cache_read.input_tokens": self.cached_tokens,
            "flowgate.prefix_cache.hit_tokens": self.cached_tokens,
            "flowgate.preemptions": self.preemptions,
            "flowgate.grammar.compile_ms": round(self.grammar_compile_ms, 3),
        })
        if self.texts is not None:
            span.set_attribute("gen_ai.output.messages", json.dumps([
                {"role": "assistant", "parts": [{"type": "text", "content": text}]}
                for _, text in sorted(self.texts.items())]))
        if error is not None and not isinstance(error, GeneratorExit):
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
            span.set_attribute("error.type", type(error).__name__)
        elif error is not None or len(self.finish_reasons) == 0:
            span.set_attribute("error.type", "cancelled")  # the client left before the end
        span.end()


def _observe_latencies(tier: str, events: list[EngineEvent], tokens_by_index: dict[int, int]) -> None:
    """Queue time, TTFT and e2e per engine request, TPOT per completion, all on the engine's own clock."""
    if not events:
        return
    queued = events[0].time_unix_nano
    first_scheduled = first_token = None
    first_by_index: dict[int, int] = {}
    for e in events:
        if e.name == "scheduled" and first_scheduled is None:
            first_scheduled = e.time_unix_nano
        elif e.name == "first_token":
            first_token = first_token or e.time_unix_nano
            first_by_index[e.index] = e.time_unix_nano
        elif e.name == "finished" and tokens_by_index.get(e.index, 0) > 1 and e.index in first_by_index:
            per_token = (e.time_unix_nano - first_by_index[e.index]) / (tokens_by_index[e.index] - 1)
            metrics.TIME_PER_OUTPUT_TOKEN.labels(tier).observe(per_token / 1e9)
    if first_scheduled is not None:
        metrics.QUEUE_TIME.labels(tier).observe((first_scheduled - queued) / 1e9)
    if first_token is not None:
        metrics.TIME_TO_FIRST_TOKEN.labels(tier).observe((first_token - queued) / 1e9)
    metrics.E2E_LATENCY.labels(tier).observe((events[-1].time_unix_nano - queued) / 1e9)
