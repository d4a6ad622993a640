"""What keeps a small model's tool call from running away, beyond the schema the client wrote.

    default bounds     an array without maxItems gets `max_items`, a string without maxLength (and with no
                       enum, const, pattern or format to bound it) gets `max_length`; never below the
                       schema's own minItems/minLength, so nothing valid becomes invalid but a runaway
    repeat guards      see engine.repeats (`repeat_penalty`; a repeated call ends the output)

Neither applies to `strict: true` tools: their schema is enforced exactly as written, no looser and no
tighter. The values come from the server's settings (gateway.request_defaults); 0 turns one off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_SUBSCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SUBSCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SUBSCHEMAS = ("items", "additionalProperties", "not", "if", "then", "else")
_BOUNDED_ALREADY = ("enum", "const", "pattern", "format")


@dataclass(frozen=True)
class ToolGuards:
    max_items: int = 0
    max_length: int = 0
    repeat_penalty: float = 0.0


NO_GUARDS = ToolGuards()
DEFAULT_GUARDS = ToolGuards(max_items=32, max_length=1024)  # the repeat penalty measured worse: off


def with_default_bounds(schema: Any, guards: ToolGuards) -> Any:
    """A copy of `schema` with the default bounds added wherever it gives none."""
    if not isinstance(schema, dict):
        return schema
    bounded = dict(schema)
    for key in _SUBSCHEMA_LISTS:
        if isinstance(schema.get(key), list):
            bounded[key] = [with_default_bounds(s, guards) for s in schema[key]]
    for key in _SUBSCHEMA_MAPS:
        if isinstance(schema.get(key), dict):
            bounded[key] = {name: with_default_bounds(s, guards) for name, s in schema[key].items()}
    for key in _SUBSCHEMAS:
        if key in schema:
            bounded[key] = with_default_bounds(schema[key], guards)
    types = schema.get("type")
    types = set(types) if isinstance(types, list) else {types}
    if guards.max_items and "maxItems" not in schema and ("array" in types or "items" in schema):
        bounded["maxItems"] = max(guards.max_items, schema.get("minItems", 0))
    if (guards.max_length and "string" in types and "maxLength" not in schema
            and not any(key in schema for key in _BOUNDED_ALREADY)):
        bounded["maxLength"] = max(guards.max_length, schema.get("minLength", 0))
    return bounded
