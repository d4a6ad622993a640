"""An engine request's shipped events -> child spans with the engine's own timestamps.

    engine.request    queued ........................................ finished   (span events: every point event)
      engine.queue    queued ... scheduled                                        (grammar compile inside)
      engine.grammar_compile
      engine.prefill            [chunk]  [chunk]                                  (one per chunk, per completion)
      engine.decode                            first_token ............ finished  (per completion)
"""

from __future__ import annotations

from opentelemetry.trace import Span, Tracer, set_span_in_context

from engine.protocol import EngineEvent

POINT_EVENTS = ("queued", "scheduled", "first_token", "preempted", "resumed", "finished")


def record_engine_spans(tracer: Tracer, parent: Span, request_id: str, events: list[EngineEvent]) -> None:
    if not events:
        return
    start, end = events[0].time_unix_nano, events[-1].time_unix_nano
    root = tracer.start_span("engine.request", context=set_span_in_context(parent), start_time=start,
                             attributes={"flowgate.request_id": request_id})
    context = set_span_in_context(root)

    def child(name: str, begin: int, finish: int, **attributes) -> None:
        tracer.start_span(name, context=context, start_time=begin, attributes=attributes).end(end_time=finish)

    first_scheduled = next((e.time_unix_nano for e in events if e.name == "scheduled"), None)
    if first_scheduled is not None:
        child("engine.queue", start, first_scheduled)
    first_token: dict[int, int] = {}
    for e in events:
        if e.name in POINT_EVENTS:  # the completion index only where there are several
            root.add_event(e.name, {"flowgate.completion.index": e.index} if e.index else None,
                           timestamp=e.time_unix_nano)
        if e.name == "grammar_compiled":
            child("engine.grammar_compile", e.time_unix_nano - e.duration_ns, e.time_unix_nano)
        elif e.name == "prefill":
            child("engine.prefill", e.time_unix_nano - e.duration_ns, e.time_unix_nano,
                  **{"flowgate.completion.index": e.index, "flowgate.prefill.num_tokens": e.num_tokens})
        elif e.name == "first_token":
            first_token[e.index] = e.time_unix_nano
        elif e.name == "finished" and e.index in first_token:
            child("engine.decode", first_token[e.index], e.time_unix_nano, **{"flowgate.completion.index": e.index})
    root.end(end_time=end)
