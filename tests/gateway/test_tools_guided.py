"""build_guided: the grammar for each tool_choice / parallel_tool_calls / response_format, compiled by the
engine's GrammarBackend on the bundled vocabulary and checked on whole outputs."""

from __future__ import annotations

import json

import pytest
import xgrammar as xgr

from engine.grammar import GrammarBackend
from engine.protocol import GuidedDecoding
from gateway.tools import build_guided, parse_tool_calls
from gateway.tools.guards import ToolGuards, with_default_bounds
from gateway.tools.markup import render_call

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "noop"}},  # no parameters: takes none
]
CALL = render_call("get_weather", {"city": "Paris"})
NOOP = render_call("noop", {})
NAMED = {"type": "function", "function": {"name": "get_weather"}}
OUTPUTS = {
    "text": "The weather is nice.",
    "call": CALL,
    "two calls": f"{CALL}\n{NOOP}",
    "same call twice": f"{CALL}\n{CALL}",
    "text then call": f"Let me check.\n{CALL}",
    "call then text": f"{CALL}\nDone.",
    "undeclared function": render_call("rm_rf", {}),
    "schema-invalid arguments": render_call("get_weather", {"city": 3}),
    "undeclared argument": render_call("get_weather", {"city": "Paris", "x": 1}),
    "arguments to noop": render_call("noop", {"a": 1}),
    "markup in text": "See <tool_call> here",
    "empty": "",
}
# tool_choice, parallel_tool_calls -> the outputs the grammar accepts (all others it rejects)
SEMANTICS = [
    ("required", True, {"call", "two calls", "same call twice"}),
    ("required", False, {"call"}),
    (NAMED, True, {"call", "same call twice"}),
    (NAMED, False, {"call"}),
    ("auto", True, {"text", "call", "two calls", "same call twice", "text then call", "call then text", "empty"}),
    ("auto", False, {"text", "call", "text then call", "empty"}),
    (None, None, {"text", "call", "two calls", "same call twice", "text then call", "call then text", "empty"}),
    ("none", True, {"text", "empty"}),
]


@pytest.fixture(scope="module")
def backend(bundled_model_dir) -> GrammarBackend:
    return GrammarBackend(bundled_model_dir, vocab_size=49152)


def accepts(backend: GrammarBackend, guided: GuidedDecoding, text: str) -> bool:
    matcher = xgr.GrammarMatcher(backend.compile(guided))
    return matcher.accept_string(text) and matcher.is_completed()


@pytest.mark.parametrize(
    "tool_choice, parallel, accepted", SEMANTICS, ids=[f"{c if isinstance(c, str | None) else 'named'}-{p}" for c, p, _ in SEMANTICS]
)
def test_tool_choice_semantics(backend, tool_choice, parallel, accepted):
    guided = build_guided(TOOLS, tool_choice, parallel, None)
    assert guided.kind == "structural_tag"
    assert {name for name, text in OUTPUTS.items() if accepts(backend, guided, text)} == accepted


def test_every_accepted_call_parses_back(backend):
    guided = build_guided(TOOLS, "required", True, None)
    content, calls = parse_tool_calls(OUTPUTS["two calls"])
    assert accepts(backend, guided, OUTPUTS["two calls"])
    assert content is None
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}),
        ("noop", {}),
    ]


def test_no_grammar_without_tools_or_a_response_format():
    assert build_guided(None, None, None, None) is None
    assert build_guided([], None, True, {"type": "text"}) is None


def test_response_formats(backend):
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}}, "required": ["answer"]}
    as_schema = build_guided(None, None, None, {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}})
    assert as_schema == GuidedDecoding(kind="json_schema", spec=json.dumps(schema))
    assert accepts(backend, as_schema, '{"answer": 42}') and not accepts(backend, as_schema, '{"answer": "x"}')
    assert build_guided(None, None, None, {"type": "json_object"}) == GuidedDecoding(kind="json_object")
    no_schema = {"type": "json_schema", "json_schema": {"name": "a"}}
    assert build_guided(None, None, None, no_schema) == GuidedDecoding(kind="json_object")
    # With tool_choice none the JSON answer is all there is.
    assert build_guided(TOOLS, "none", True, {"type": "json_object"}) == GuidedDecoding(kind="json_object")


def test_auto_with_a_response_format_is_calls_or_the_json_answer(backend):
    guided = build_guided(TOOLS, "auto", True, {"type": "json_object"})
    assert accepts(backend, guided, '{"weather": "nice"}')
    assert accepts(backend, guided, OUTPUTS["two calls"])
    assert not accepts(backend, guided, OUTPUTS["text"])
    assert not accepts(backend, guided, OUTPUTS["text then call"])


def test_non_strict_schemas_are_enforced_as_far_as_possible(backend):
    loose = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 3, "not": {"const": 4}}}}
    tools = [{"type": "function", "function": {"name": "f", "parameters": loose, "strict": False}}]
    guided = build_guided(tools, "required", False, None)
    assert accepts(backend, guided, render_call("f", {"n": 5}))
    assert not accepts(backend, guided, render_call("f", {"n": 2}))


GUARDS = ToolGuards(max_items=2, max_length=8, repeat_penalty=4.0)
LISTS = {"type": "object", "properties": {
    "tags": {"type": "array", "items": {"type": "string"}},
    "many": {"type": "array", "minItems": 3, "items": {"type": "string", "minLength": 10}},
    "codes": {"type": "array", "maxItems": 5, "items": {"type": "string", "pattern": "^[a-z]+$"}},
    "either": {"anyOf": [{"type": ["string", "null"]}, {"type": "integer"}]}}}


def test_default_bounds_fill_only_what_the_schema_leaves_open():
    bounded = with_default_bounds(LISTS, GUARDS)["properties"]
    assert bounded["tags"] == {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 2}
    assert bounded["many"]["maxItems"] == 3 and bounded["many"]["items"]["maxLength"] == 10  # never below a min
    assert bounded["codes"] == LISTS["properties"]["codes"]  # bounded already (maxItems, a pattern)
    assert bounded["either"]["anyOf"][0]["maxLength"] == 8
    assert with_default_bounds(LISTS, ToolGuards()) == LISTS


@pytest.mark.parametrize("strict", [False, True])
def test_guards_apply_to_tools_that_are_not_strict(backend, strict):
    tools = [{"type": "function", "function": {"name": "f", "parameters": LISTS, "strict": strict}}]
    guided = build_guided(tools, "required", True, None, guards=GUARDS)
    assert guided.end_on_repeat and guided.repeat_penalty == (0.0 if strict else 4.0)
    long_list = render_call("f", {"tags": ["a", "b", "c"]})
    long_string = render_call("f", {"tags": ["abcdefghi"]})
    assert accepts(backend, guided, render_call("f", {"tags": ["abcdefgh", "b"]}))
    assert accepts(backend, guided, long_list) is strict and accepts(backend, guided, long_string) is strict


def test_auto_free_text_gets_no_repeat_guard():
    guided = build_guided(TOOLS, "auto", True, None, guards=GUARDS)
    assert guided.repeat_penalty == 0.0 and not guided.end_on_repeat
