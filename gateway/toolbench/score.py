"""AST-style scoring: a response's calls against a case's expected calls.

valid   every returned call names a declared function and its arguments are JSON that the function's
        parameters schema accepts, and there is at least one call
exact   the calls match the expected ones one to one (order free): same name, every expected argument
        has one of its acceptable values, and no argument that is not expected. Strings compare
        case-insensitively without surrounding whitespace and trailing punctuation; numbers by value;
        objects inside arrays may carry extra (optional) keys. With nothing expected, exact means no call.
"""

from __future__ import annotations

import json
from typing import Any

import jsonschema


def parse_calls(tool_calls: list[Any] | None) -> list[tuple[str, Any]]:
    """(name, arguments) per call; arguments None when they are not JSON."""
    calls = []
    for c in tool_calls or []:
        try:
            arguments = json.loads(c.function.arguments)
        except (TypeError, json.JSONDecodeError):
            arguments = None
        calls.append((c.function.name, arguments))
    return calls


def is_valid(calls: list[tuple[str, Any]], functions: dict[str, dict]) -> bool:
    if not calls:
        return False
    for name, arguments in calls:
        if name not in functions or not isinstance(arguments, dict):
            return False
        if not jsonschema.Draft202012Validator(functions[name]["parameters"]).is_valid(arguments):
            return False
    return True


def is_exact(calls: list[tuple[str, Any]], expected: list[dict]) -> bool:
    if len(calls) != len(expected):
        return False
    remaining = list(expected)
    for name, arguments in calls:
        match = next((e for e in remaining if _call_matches(name, arguments, e)), None)
        if match is None:
            return False
        remaining.remove(match)
    return True


def _call_matches(name: str, arguments: Any, expected: dict) -> bool:
    if name != expected["name"] or not isinstance(arguments, dict):
        return False
    wanted = expected["arguments"]
    if set(arguments) - set(wanted):
        return False
    for key, acceptable in wanted.items():
        if key not in arguments:
            if "" not in acceptable:
                return False
        elif not any(_value_matches(arguments[key], a) for a in acceptable if a != ""):
            return False
    return True


def _value_matches(got: Any, want: Any) -> bool:
    if isinstance(want, str):
        return isinstance(got, str) and _norm(got) == _norm(want)
    if isinstance(want, bool) or want is None:
        return got is want
    if isinstance(want, int | float):
        return isinstance(got, int | float) and not isinstance(got, bool) and float(got) == float(want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_value_matches, got, want))
    if isinstance(want, dict):
        return isinstance(got, dict) and all(k in got and _value_matches(got[k], v) for k, v in want.items())
    return got == want


def _norm(text: str) -> str:
    return text.strip().rstrip(".!?").strip().casefold()
