"""validate_tools / validate_response_format: real clients' odd-but-valid shapes pass; bad tools, bad
tool_choice and (with strict) keywords the grammar cannot enforce are 400s naming the parameter."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.errors import InvalidRequest
from gateway.schemas.tools import ChatTool, FunctionDefinition, NamedFunction, NamedToolChoice
from gateway.tools import validate_response_format, validate_tools

ROOT = Path(__file__).resolve().parents[2]
WEATHER_PARAMETERS = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "GetWeather",
    "description": "Arguments",
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name", "examples": ["Paris"], "maxLength": 80},
        "unit": {"enum": ["celsius", "fahrenheit"], "default": "celsius", "$comment": "lower case"},
        "days": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 14}, {"type": "null"}]},
    },
    "required": ["city"],
    "additionalProperties": False,
}


def tool(parameters=None, name="get_weather", strict=None, **function) -> dict:
    function = {"name": name, **function}
    if parameters is not None:
        function["parameters"] = parameters
    if strict is not None:
        function["strict"] = strict
    return {"type": "function", "function": function}


def rejects(tools, tool_choice=None, parallel=None) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate_tools(tools, tool_choice, parallel)
    return info.value


@pytest.mark.parametrize("strict", [True, False, None])
@pytest.mark.parametrize("tool_choice", [None, "auto", "none", "required", {"type": "function", "function": {"name": "get_weather"}}])
def test_real_client_shapes_pass(strict, tool_choice):
    validate_tools([tool(WEATHER_PARAMETERS, strict=strict), tool(name="ping-v2_1")], tool_choice, False)


def test_structs_pass_like_dicts():
    tools = [ChatTool(function=FunctionDefinition(name="f", parameters={"type": "object"}, strict=True))]
    validate_tools(tools, NamedToolChoice(function=NamedFunction(name="f")), True)


@pytest.mark.parametrize(
    "tools, tool_choice, param, message",
    [
        ([], "auto", "tool_choice", "only allowed when tools"),
        (None, "none", "tool_choice", "only allowed when tools"),
        ([tool(name="get weather")], None, "tools[0].function.name", "letters, digits"),
        ([tool(name="x" * 65)], None, "tools[0].function.name", "1-64"),
        ([tool(), tool()], None, "tools[1].function.name", "duplicate"),
        ([tool({"type": "strin"})], None, "tools[0].function.parameters", "not a valid JSON Schema"),
        ([tool({"type": "object", "properties": {"a": {"minimum": "1"}}})], None, "tools[0].function.parameters", "not a valid JSON Schema"),
        ([tool({"type": "array"})], None, "tools[0].function.parameters", "JSON object"),
        ([tool()], {"type": "function", "function": {"name": "nope"}}, "tool_choice", "'nope'"),
        ([tool()], "sometimes", "tool_choice", "invalid tool_choice"),
        ([{"type": "function"}], None, "tools", "invalid tools"),
        ([{"type": "retrieval", "function": {"name": "f"}}], None, "tools", "invalid tools"),
        ([tool(name=f"f{i}") for i in range(129)], None, "tools", "at most 128"),
    ],
)
def test_bad_tools_and_tool_choice_are_rejected(tools, tool_choice, param, message):
    error = rejects(tools, tool_choice)
    assert error.param == param
    assert message in error.message


def test_parallel_tool_calls_must_be_a_boolean():
    assert rejects([tool()], None, "yes").param == "parallel_tool_calls"


UNENFORCEABLE = [
    ({"v": {"type": "array", "items": {"type": "string"}, "uniqueItems": True}}, "uniqueItems"),
    ({"v": {"type": "array", "contains": {"const": 1}}}, "contains"),
    ({"v": {"oneOf": [{"type": "integer"}, {"type": "number"}]}}, "oneOf"),
    ({"v": {"allOf": [{"type": "integer"}, {"minimum": 3}]}}, "allOf"),
    ({"v": {"not": {"type": "integer"}}}, "not"),
    ({"v": {"if": {"type": "integer"}, "then": {"minimum": 3}}}, "if"),
    ({"v": {"type": "integer", "nullable": True}}, "nullable"),
    ({"v": {"type": "number", "multipleOf": 0.5}}, "multipleOf"),
    ({"v": {"type": "integer", "multipleOf": 5, "maximum": 100}}, "multipleOf"),
    ({"v": {"type": "string", "format": "int32"}}, "format"),
    ({"v": {"type": "string", "pattern": "^a+$", "maxLength": 3}}, "maxLength"),
    ({"v": {"type": "string", "format": "date", "minLength": 3}}, "minLength"),
    ({"v": {"type": "string", "format": "uuid", "pattern": "^a"}}, "pattern"),
    ({"v": {"type": "array", "items": [{"type": "integer"}]}}, "items"),
    ({"v": {"$ref": "https://example.com/schema.json"}}, "$ref"),
    ({"v": {"type": "object", "patternProperties": {"^a": {"type": "integer"}}}}, "patternProperties"),
    ({"v": {"type": "object", "minProperties": 1}}, "minProperties"),
    ({"v": {"type": "integer", "minimun": 3}}, "minimun"),  # a typo is not silently ignored
    ({"v": {"type": "string", "enum": ["a", 1]}}, "enum"),  # 1 is no string, yet the grammar would emit it
    ({"v": {"type": "integer", "maximum": 3, "const": 5}}, "const"),
    ({"v": {"maxLength": 3}}, "maxLength"),  # ignored without "type": "string"
    ({"v": {"minimum": 3}}, "minimum"),
    ({"v": {"minItems": 1}}, "minItems"),
    ({"v": {"type": "string", "anyOf": [{"maxLength": 3}, {"type": "integer"}]}}, "anyOf"),
    ({"v": {"$ref": "#/$defs/s", "maxLength": 2}}, "$ref"),
    ({"v": {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["b"]}}, "required"),
]


@pytest.mark.parametrize("properties, keyword", UNENFORCEABLE, ids=[k for _, k in UNENFORCEABLE])
def test_strict_rejects_what_the_grammar_cannot_enforce(properties, keyword):
    # draft-07 (as many clients send it), where a list of `items` is still valid JSON Schema
    parameters = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "object", "properties": properties}
    error = rejects([tool(parameters, strict=True)])
    assert error.param == "tools[0].function.parameters"
    assert f"{keyword!r} at #/properties/v (" in error.message
    assert "Supported: $defs, $ref" in error.message and "uuid" in error.message
    validate_tools([tool(parameters, strict=False)], None, None)  # best effort without strict
    validate_tools([tool(parameters)], None, None)


def test_absurdly_nested_schemas_are_a_clean_error():
    nested: dict = {"type": "object"}
    for _ in range(200):
        nested = {"type": "object", "properties": {"x": nested}}
    assert "nest" in rejects([tool(nested, strict=True)]).message


def test_response_format():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    for response_format in (
        None,
        {"type": "text"},
        {"type": "json_object"},
        {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}},
        {"type": "json_schema", "json_schema": {"name": "any", "strict": False}},
    ):
        validate_response_format(response_format)
    cases = [
        ({"type": "json_schema", "json_schema": {"name": "a b", "schema": schema}}, "response_format.json_schema.name"),
        ({"type": "json_schema", "json_schema": {"name": "a", "schema": {"type": 3}}}, "response_format.json_schema.schema"),
        ({"type": "json_schema", "json_schema": {"name": "a", "strict": True, "schema": {"not": {}}}}, "response_format.json_schema.schema"),
        ({"type": "json_schema"}, "response_format"),
        ({"type": "yaml"}, "response_format"),
    ]
    for response_format, param in cases:
        with pytest.raises(InvalidRequest) as info:
            validate_response_format(response_format)
        assert info.value.param == param


def test_gateway_tools_import_no_torch():
    code = "import sys, gateway.tools; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60)
