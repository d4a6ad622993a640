"""Property-based fuzzing of every operation in our own OpenAPI schema: schemathesis generates valid and
invalid requests, and the server never answers 5xx; every error is OpenAI's error object."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode

from gateway.app import create_app
from tests.gateway.conftest import MODEL

# The schema comes from the app object itself (no lifespan runs, so no engine starts); the requests go to
# the session's real server.
API = schemathesis.openapi.from_dict(create_app().openapi_schema.to_schema())
OPERATIONS = [result.ok() for result in API.get_all_operations()]
MAX_GENERATED_TOKENS = 1  # what one valid generated request may ask of the (slow, CPU) model
MAX_TOKEN_KEYS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def bound_work(body) -> None:
    """Clamp valid-but-expensive values; invalid ones stay as generated so validation is still fuzzed."""
    if not isinstance(body, dict):
        return
    if isinstance(body.get("model"), str):  # unknown models are a 404 (tested apart); reach the engine
        body["model"] = MODEL
    for key in MAX_TOKEN_KEYS:
        if key in body and (body[key] is None or (type(body[key]) is int and body[key] > MAX_GENERATED_TOKENS)):
            body[key] = MAX_GENERATED_TOKENS  # null means "up to the context window", as the default does
    if not any(key in body for key in MAX_TOKEN_KEYS):  # the default would run to the context window
        body["max_tokens" if "input" not in body else "max_output_tokens"] = MAX_GENERATED_TOKENS
    if type(body.get("n")) is int and body["n"] > 1:
        body["n"] = 1


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(data=st.data())
def test_no_server_errors(server, operation, data):
    mode = data.draw(st.sampled_from([GenerationMode.POSITIVE, GenerationMode.NEGATIVE]))
    case = data.draw(operation.as_strategy(generation_mode=mode))
    bound_work(case.body)
    response = case.call(base_url=server.url, timeout=60)
    assert response.status_code < 500, (case.body, response.text)
    if response.status_code >= 400:
        assert set(response.json()["error"]) == {"message", "type", "param", "code"}, response.text
