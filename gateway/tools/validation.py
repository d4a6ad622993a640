"""Reject tool and response_format requests the grammar cannot honour, as 400s naming the parameter.

With `strict: true` a schema may only use keywords the xgrammar grammar enforces exactly (measured by
random walks through the grammar in tests/gateway/test_tools_conformance.py); annotations are always
accepted. `format` is enforced syntactically for the listed formats (a "date" may be 2024-02-31, an
"ipv4" octet may have leading zeros), which is all JSON Schema asks of `format` by default. A string's
length bounds, `pattern` and `format` cannot be combined: xgrammar keeps only one of them. Without
`strict` the same schema is enforced as far as the grammar can and the rest is ignored, as OpenAI's
non-strict mode.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
from jsonschema.exceptions import SchemaError

from engine.errors import InvalidRequest
from gateway.schemas.tools import NamedToolChoice, ResponseFormatJSONSchema
from gateway.tools.coerce import as_response_format, as_tool_choice, as_tools

MAX_TOOLS = 128
MAX_SCHEMA_DEPTH = 32
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

ANNOTATION_KEYWORDS = frozenset(
    {"$schema", "$id", "$comment", "title", "description", "examples", "default", "deprecated",
     "readOnly", "writeOnly", "contentMediaType", "contentEncoding"}
)  # fmt: skip
ENFORCED_KEYWORDS = frozenset(
    {"type", "enum", "const", "anyOf", "$ref", "$defs", "definitions",
     "properties", "required", "additionalProperties",
     "items", "prefixItems", "minItems", "maxItems",
     "minLength", "maxLength", "pattern", "format",
     "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"}
)  # fmt: skip
ENFORCED_FORMATS = frozenset(
    {"date", "time", "date-time", "duration", "email", "hostname", "ipv4", "ipv6", "uri", "uri-reference",
     "uri-template", "json-pointer", "relative-json-pointer", "uuid"}
)  # fmt: skip
_BOUNDS = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
# Keywords xgrammar ignores unless the schema's own "type" names one of these.
_TYPED_KEYWORDS = {
    **{keyword: frozenset({"string"}) for keyword in ("minLength", "maxLength", "pattern", "format")},
    **{keyword: frozenset({"integer", "number"}) for keyword in _BOUNDS},
    "multipleOf": frozenset({"integer"}),
    **{keyword: frozenset({"array"}) for keyword in ("minItems", "maxItems")},
}
_SCHEMA_MAPS = ("properties", "$defs", "definitions")  # name -> subschema
_SCHEMA_LISTS = ("anyOf", "prefixItems")
_SCHEMA_VALUES = ("additionalProperties", "items")


def validate_tools(tools: Any, tool_choice: Any, parallel_tool_calls: Any) -> None:
    tools = as_tools(tools)
    choice = as_tool_choice(tool_choice)
    if not isinstance(parallel_tool_calls, bool | None):
        raise InvalidRequest("parallel_tool_calls must be a boolean", param="parallel_tool_calls")
    if not tools:
        if choice is not None:
            raise InvalidRequest("tool_choice is only allowed when tools are given", param="tool_choice")
        return
    if len(tools) > MAX_TOOLS:
        raise InvalidRequest(f"at most {MAX_TOOLS} tools are allowed, got {len(tools)}", param="tools")
    names = set()
    for i, tool in enumerate(tools):
        function, param = tool.function, f"tools[{i}].function"
        if not NAME_PATTERN.match(function.name):
            raise InvalidRequest(
                f"{param}.name must be 1-64 letters, digits, '_' or '-', got {function.name!r}",
                param=f"{param}.name",
            )
        if function.name in names:
            raise InvalidRequest(f"duplicate function name {function.name!r}", param=f"{param}.name")
        names.add(function.name)
        if function.parameters is not None:
            check_schema(function.parameters, strict=function.strict is True, param=f"{param}.parameters")
            if function.parameters.get("type", "object") != "object":
                raise InvalidRequest(
                    f"{param}.parameters must describe a JSON object (type: object)",
                    param=f"{param}.parameters",
                )
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise InvalidRequest(
            f"tool_choice names function {choice.function.name!r}, which is not among the tools",
            param="tool_choice",
        )


def validate_response_format(response_format: Any) -> None:
    response_format = as_response_format(response_format)
    if not isinstance(response_format, ResponseFormatJSONSchema):
        return
    spec, param = response_format.json_schema, "response_format.json_schema"
    if not NAME_PATTERN.match(spec.name):
        raise InvalidRequest(
            f"{param}.name must be 1-64 letters, digits, '_' or '-', got {spec.name!r}", param=f"{param}.name"
        )
    if spec.schema is not None:
        check_schema(spec.schema, strict=spec.strict is True, param=f"{param}.schema")


def check_schema(schema: dict, *, strict: bool, param: str) -> None:
    """A valid JSON Schema (for the draft its `$schema` names); with `strict`, only enforced keywords."""
    try:
        jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator).check_schema(
            schema
        )
    except SchemaError as e:
        where = "/".join(str(p) for p in e.path)
        raise InvalidRequest(
            f"{param} is not a valid JSON Schema: {e.message}" + (f" (at {where})" if where else ""),
            param=param,
        ) from e
    except RecursionError as e:
        raise InvalidRequest(f"{param} is nested too deeply", param=param) from e
    problems = list(_unenforced(schema, "#", 0)) if strict else []
    if problems:
        listed = "; ".join(f"{keyword!r} at {path} ({reason})" for path, keyword, reason in problems[:5])
        raise InvalidRequest(
            f"{param} uses schema keywords that strict mode cannot enforce: {listed}. "
            f"Supported: {', '.join(sorted(ENFORCED_KEYWORDS))}; formats: {', '.join(sorted(ENFORCED_FORMATS))}; "
            "annotations such as title, description, examples and default are ignored. "
            "Remove them or set strict to false.",
            param=param,
        )


def _unenforced(schema: Any, path: str, depth: int):
    """(path, keyword, reason) for every keyword the grammar would not enforce exactly."""
    if not isinstance(schema, dict):
        return
    if depth > MAX_SCHEMA_DEPTH:
        yield path, "(nesting)", f"deeper than {MAX_SCHEMA_DEPTH} levels"
        return
    for keyword, value in schema.items():
        if keyword in ANNOTATION_KEYWORDS:
            continue
        reason = (
            "not enforced by the grammar"
            if keyword not in ENFORCED_KEYWORDS
            else _why_not(schema, keyword, value)
        )
        if reason:
            yield path, keyword, reason
        elif keyword in _SCHEMA_MAPS:
            for name, sub in value.items():
                yield from _unenforced(sub, f"{path}/{keyword}/{name}", depth + 1)
        elif keyword in _SCHEMA_LISTS:
            for i, sub in enumerate(value):
                yield from _unenforced(sub, f"{path}/{keyword}/{i}", depth + 1)
        elif keyword in _SCHEMA_VALUES:
            yield from _unenforced(value, f"{path}/{keyword}", depth + 1)


def _why_not(schema: dict, keyword: str, value: Any) -> str | None:
    """Why xgrammar would not enforce this (measured) use of a supported keyword, or None if it does."""
    types = schema.get("type", [])
    types = {types} if isinstance(types, str) else set(types)
    if keyword in _TYPED_KEYWORDS and not types & _TYPED_KEYWORDS[keyword]:
        return f"only enforced next to type {' or '.join(sorted(_TYPED_KEYWORDS[keyword]))}"
    if keyword in ("minLength", "maxLength") and {"pattern", "format"} & schema.keys():
        return "cannot be combined with pattern or format"
    if keyword == "pattern" and "format" in schema:
        return "cannot be combined with format"
    if keyword == "format" and value not in ENFORCED_FORMATS:
        return f"format {value!r} is not enforced"
    if keyword == "multipleOf" and (types != {"integer"} or _BOUNDS & schema.keys()):
        return "only enforced on integers without minimum or maximum"
    if keyword in ("anyOf", "$ref") and schema.keys() - ANNOTATION_KEYWORDS - {
        keyword,
        "$defs",
        "definitions",
    }:
        return "cannot be combined with other keywords in the same schema"
    if keyword == "$ref" and not value.startswith("#"):
        return "only local references are resolved"
    if keyword == "items" and not isinstance(value, dict | bool):
        return "must be a schema"
    if keyword == "required" and set(value) - set(schema.get("properties", {})):
        return f"names {sorted(set(value) - set(schema.get('properties', {})))} that are not in properties"
    if keyword in ("enum", "const"):  # the listed values are emitted whatever the sibling keywords say
        rest = {k: v for k, v in schema.items() if k not in ("enum", "const")}
        values = value if keyword == "enum" else [value]
        if not all(jsonschema.Draft202012Validator(rest).is_valid(v) for v in values):
            return "a listed value does not satisfy the other keywords"
    return None
