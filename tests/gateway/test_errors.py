"""Every failure is OpenAI's error object with the right status, names the offending param, leaks nothing,
and leaves the server serving."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from litestar import Litestar, get
from litestar.testing import TestClient

from engine.errors import EngineDead, EngineOverloaded
from gateway import sse
from gateway.errors import openai_exception_handler
from tests.gateway.conftest import MAX_BODY_BYTES, MAX_MODEL_LEN, MODEL

HI = [{"role": "user", "content": "Hi"}]


def chat(**fields) -> dict:
    return {"model": MODEL, "messages": HI, "max_tokens": 2, "temperature": 0, **fields}


def assert_error(response: httpx.Response, status: int, *, param=None, code=None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"] == ("server_error" if status >= 500 else "invalid_request_error")
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    assert "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (chat(max_tokens="many"), "max_tokens"),
        (chat(max_tokens=0), "max_tokens"),
        (chat(temperature=2.5), "temperature"),
        (chat(top_p=0), "top_p"),
        (chat(n=0), "n"),
        (chat(n=10_000), "n"),
        (chat(presence_penalty=-3), "presence_penalty"),
        (chat(top_logprobs=21, logprobs=True), "top_logprobs"),
        (chat(top_logprobs=2), "top_logprobs"),
        (chat(logit_bias={"hello": 1}), "logit_bias"),
        (chat(logit_bias={"99999999": 1}), "logit_bias"),
        (chat(logit_bias={"5": 101}), "logit_bias[...]"),
        (chat(stop=["x"] * 100), "stop"),
        (chat(messages="hello"), "messages"),
        (chat(messages=[]), "messages"),
        (chat(messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role"),
        (chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
         "messages[0].content[0].type"),
        (chat(stream="yes"), "stream"),
        ({"messages": HI}, "model"),
        (chat(tool_choice="required"), "tool_choice"),
        (chat(tools=[{"type": "function", "function": {"name": "no spaces allowed"}}]), "tools[0].function.name"),
        (chat(tools=[{"type": "function", "function": {"name": "f"}}],
              tool_choice={"type": "function", "function": {"name": "g"}}), "tool_choice"),
        (chat(response_format={"type": "xml"}), "response_format.type"),
        (chat(messages=[{"content": "hi"}]), "messages[0].role"),
    ],
)
def test_invalid_chat_request_is_a_400_naming_the_param(http, body, param):
    assert_error(http.post("/v1/chat/completions", json=body), 400, param=param)


@pytest.mark.parametrize(
    ("content", "message_part"),
    [
        (b'{"model": "smollm2-135m", "messages": [', "parse"),
        (b"\xff\xfe{}", "malformed"),
        (b'{"model": "smollm2-135m", "messages": [{"role": "user", "content": "\xff"}]}', "UTF-8"),
        (b'{"model": "smollm2-135m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nested"),
        (b"[]", "object"),
        (b"null", "object"),
        (b"", "required"),
    ],
)
def test_unparsable_body_is_a_400(http, content, message_part):
    response = http.post("/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert message_part in assert_error(response, 400)["message"]


def test_body_over_the_limit_is_a_413(http):
    content = b'{"model": "' + b"x" * MAX_BODY_BYTES + b'"}'
    assert_error(http.post("/v1/chat/completions", content=content), 413, code="request_too_large")


def test_unknown_model_is_a_404(http):
    error = assert_error(http.post("/v1/chat/completions", json=chat(model="gpt-9")), 404, param="model",
                         code="model_not_found")
    assert "gpt-9" in error["message"]
    assert_error(http.get("/v1/models/gpt-9"), 404, param="model", code="model_not_found")


def test_unknown_route_and_wrong_method(http):
    assert_error(http.post("/v1/nothing", json={}), 404)
    assert_error(http.get("/v1/chat/completions"), 405)


def test_prompt_plus_max_tokens_beyond_the_context_window_states_both_numbers(http):
    error = assert_error(http.post("/v1/chat/completions", json=chat(max_tokens=5000)), 400,
                         param="max_tokens", code="context_length_exceeded")
    assert str(MAX_MODEL_LEN) in error["message"] and "5000" in error["message"]
    long_prompt = [{"role": "user", "content": "word " * 2 * MAX_MODEL_LEN}]
    error = assert_error(http.post("/v1/chat/completions", json=chat(messages=long_prompt)), 400,
                         param="messages", code="context_length_exceeded")
    assert str(MAX_MODEL_LEN) in error["message"]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        ("/v1/completions", {"model": MODEL, "prompt": "word " * 2 * MAX_MODEL_LEN}, "prompt"),
        ("/v1/responses", {"model": MODEL, "input": "word " * 2 * MAX_MODEL_LEN}, "input"),
        ("/v1/responses", {"model": MODEL, "input": "hi", "max_output_tokens": 5000}, "max_output_tokens"),
    ],
)
def test_context_errors_name_each_endpoints_own_field(http, path, body, param):
    assert_error(http.post(path, json=body), 400, param=param, code="context_length_exceeded")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "prompt": []}, "prompt"),
        ({"model": MODEL, "prompt": [1, "a"]}, "prompt"),
        ({"model": MODEL, "prompt": [[]]}, "prompt"),
        ({"model": MODEL, "prompt": [10**9]}, "prompt"),
        ({"model": MODEL, "prompt": "hi", "suffix": "end"}, "suffix"),
        ({"model": MODEL, "prompt": "hi", "best_of": 3}, "best_of"),
        ({"model": MODEL, "prompt": "hi", "echo": True, "logprobs": 1}, "echo"),
        ({"model": MODEL, "prompt": "hi", "logprobs": 50}, "logprobs"),
    ],
)
def test_invalid_completion_request_is_a_400(http, body, param):
    assert_error(http.post("/v1/completions", json={"max_tokens": 2, **body}), 400, param=param)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "hi", "previous_response_id": "resp_1"}, "previous_response_id"),
        ({"input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}, "input[0].call_id"),
        ({"input": [{"type": "function_call_output", "call_id": "c"}]}, "input[0].output"),
        ({"input": [{"type": "message", "content": "hi"}]}, "input[0].role"),
        ({"input": []}, "input"),
        ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
        ({"input": "hi", "tools": [{"type": "web_search"}]}, "tools[0].type"),
    ],
)
def test_invalid_responses_request_is_a_400(http, body, param):
    assert_error(http.post("/v1/responses", json={"model": MODEL, **body}), 400, param=param)


def test_the_server_still_serves_after_the_errors(http):
    assert http.get("/health").json() == {"status": "ok"}
    response = http.post("/v1/chat/completions", json=chat())
    assert response.status_code == 200, response.text


def raising(exc: Exception) -> httpx.Response:
    """What the one exception handler makes of `exc` raised in a route."""

    @get("/raise", sync_to_thread=False)
    def route() -> None:
        raise exc

    with TestClient(Litestar([route], exception_handlers={Exception: openai_exception_handler})) as test_client:
        return test_client.get("/raise")


def test_unexpected_errors_are_a_500_without_internals():
    response = raising(RuntimeError("secret /etc/passwd detail"))
    assert_error(response, 500)
    assert "secret" not in response.text and "RuntimeError" not in response.text


@pytest.mark.parametrize("exc", [EngineOverloaded("4096 requests in flight"), EngineDead("engine stopped")])
def test_an_overloaded_or_dead_engine_is_a_503_to_retry(exc):
    response = raising(exc)
    assert_error(response, 503, code=exc.code)
    assert response.headers["retry-after"] == "1"


def test_a_failure_after_the_stream_started_ends_it_with_one_error_event():
    async def events():
        yield b"data: {}\n\n"
        raise EngineDead("the engine process has stopped")

    async def drain():
        return [chunk async for chunk in sse.guarded(events(), sse.error, "test")]

    first, last = asyncio.run(drain())
    assert first == b"data: {}\n\n"
    error = json.loads(last.removeprefix(b"data: "))["error"]
    assert error == {"message": "the engine process has stopped", "type": "server_error", "param": None,
                     "code": "engine_dead"}
