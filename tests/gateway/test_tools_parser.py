"""ToolCallParser: content and tool calls from model text, identical whether the text arrives whole or in
any split into deltas, with no markup in content and no broken call ever reported."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.tools import (
    ContentDelta,
    ToolCallArgumentsDelta,
    ToolCallParser,
    ToolCallStart,
    parse_tool_calls,
)
from gateway.tools.markup import render_call

WEATHER = render_call("get_weather", {"city": "Paris", "unit": "celsius"})
TRICKY_ARGUMENTS = {"q": 'a "quoted" {brace} [x] </tool_call> \\ é 🚀', "n": [1, -2.5e3, {"z": None}], "t": True}
TRICKY = render_call("search", TRICKY_ARGUMENTS)
OUTPUTS = [
    "Just text, no calls.",
    WEATHER,
    f"Let me check.\n{WEATHER}",
    f"{WEATHER}\n{TRICKY}",
    f"{TRICKY}\n{WEATHER}\nThe weather is nice.\n",
    "A lone < sign and <tool_calls> and <tool_ that are not calls.",
    '<tool_call>\n{"name": "spaced",  "arguments":  { "a" : [ 1 , 2 ] ,\n "b" : "x  y" } }\n</tool_call>',
    WEATHER[:-15],  # cut inside the arguments
    WEATHER[:20],  # cut inside the header
    f"{WEATHER}\n<tool",  # cut while the next call opens
]


def stream(text: str, cuts: list[int]):
    parser, events, start = ToolCallParser(), [], 0
    for cut in [*sorted(cuts), len(text)]:
        events += parser.feed(text[start:cut])
        start = max(start, cut)
    events += parser.finish()
    return parser, events


def test_plain_text_is_content():
    assert parse_tool_calls("Hello there.") == ("Hello there.", [])


def test_a_call_alone_has_no_content_and_compact_arguments():
    content, [call] = parse_tool_calls(WEATHER)
    assert content is None
    assert re.fullmatch(r"call_[A-Za-z0-9]{24}", call.id) and call.type == "function"
    assert call.function.name == "get_weather"
    assert call.function.arguments == '{"city":"Paris","unit":"celsius"}'


def test_arguments_keep_strings_escapes_and_numbers_exactly():
    _, [call] = parse_tool_calls(TRICKY)
    assert json.loads(call.function.arguments) == TRICKY_ARGUMENTS
    assert call.function.arguments == json.dumps(TRICKY_ARGUMENTS, ensure_ascii=False, separators=(",", ":"))


def test_text_then_parallel_calls():
    content, calls = parse_tool_calls(f"Let me check.\n{WEATHER}\n{TRICKY}\n")
    assert content == "Let me check."
    assert [c.function.name for c in calls] == ["get_weather", "search"]
    assert len({c.id for c in calls}) == 2


def test_text_that_only_resembles_markup_is_content():
    assert parse_tool_calls(OUTPUTS[5]) == (OUTPUTS[5], [])


def test_calls_cut_short_are_dropped():
    for text in (WEATHER[:-15], WEATHER[:20]):
        parser, events = stream(text, [])
        assert (parser.content, parser.tool_calls, events) == (None, [], [])
        assert parser.dropped_incomplete_call


def test_a_call_opening_at_the_end_is_dropped_not_content():
    parser, _ = stream(f"{WEATHER}\n<tool", [])
    assert parser.content is None and len(parser.tool_calls) == 1 and parser.dropped_incomplete_call
    parser, _ = stream("It ends with <", [])
    assert parser.content == "It ends with" and parser.dropped_incomplete_call
    parser, _ = stream("It ends with <b>", [])
    assert parser.content == "It ends with <b>" and not parser.dropped_incomplete_call


def test_a_complete_call_missing_only_its_closing_tag_counts():
    content, [call] = parse_tool_calls(WEATHER[: -len("\n</tool_call>")])
    assert content is None and call.function.name == "get_weather"


def test_a_call_streams_as_start_then_fragments_once_complete():
    parser, events = ToolCallParser(), []
    for char in WEATHER:
        events.append(parser.feed(char))
    first = next(i for i, e in enumerate(events) if e)
    assert WEATHER[first] == "}"  # nothing before the arguments object closes...
    start, *fragments = events[first]
    assert isinstance(start, ToolCallStart) and start.index == 0 and start.name == "get_weather"
    assert all(isinstance(f, ToolCallArgumentsDelta) and f.index == 0 for f in fragments)
    assert "".join(f.arguments for f in fragments) == parser.tool_calls[0].function.arguments
    assert start.id == parser.tool_calls[0].id


@settings(max_examples=150, deadline=None)
@given(index=st.integers(0, len(OUTPUTS) - 1), cuts=st.lists(st.integers(0, 400), max_size=12))
def test_any_split_gives_the_same_answer_as_the_whole_text(index, cuts):
    text = OUTPUTS[index]
    whole, _ = stream(text, [])
    parser, events = stream(text, [c % (len(text) + 1) for c in cuts])

    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    assert (content or None) == parser.content == whole.content
    assert "<tool_call>" not in content and "</tool_call>" not in content
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert [(s.index, s.name) for s in starts] == [(i, c.function.name) for i, c in enumerate(whole.tool_calls)]
    for start, call in zip(starts, whole.tool_calls, strict=True):
        streamed = "".join(e.arguments for e in events if isinstance(e, ToolCallArgumentsDelta) and e.index == start.index)
        assert streamed == call.function.arguments
        json.loads(streamed)
    assert parser.dropped_incomplete_call == whole.dropped_incomplete_call


@pytest.mark.parametrize("text", OUTPUTS)
def test_streamed_arguments_equal_the_calls_they_belong_to(text):
    parser, events = stream(text, list(range(0, len(text), 3)))
    for call_index, call in enumerate(parser.tool_calls):
        fragments = [e.arguments for e in events if isinstance(e, ToolCallArgumentsDelta) and e.index == call_index]
        assert "".join(fragments) == call.function.arguments
