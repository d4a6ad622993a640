"""The one place where errors become HTTP responses, all in OpenAI's error shape.

| raised                                   | status | type                  |
|------------------------------------------|--------|-----------------------|
| InvalidRequest / ContextLengthExceeded   | 400    | invalid_request_error |
| AuthenticationFailed (any bad key)       | 401    | authentication_error  |
| PermissionDenied (model, tier)           | 403    | permission_error      |
| RateLimited (key limits, tier capacity)  | 429    | rate_limit_error (+ retry-after) |
| Litestar validation, unparsable body     | 400    | invalid_request_error |
| ModelNotFound, unknown route             | 404    | invalid_request_error |
| wrong method                             | 405    | invalid_request_error |
| body over the size limit                 | 413    | invalid_request_error |
| ClientDisconnected (nobody reads it)     | 499    | invalid_request_error |
| EngineOverloaded, EngineDead             | 503    | server_error          |
| ApiError (bulk routes: 404/409/413/429/503) | its own | by status           |
| JobConflict (Idempotency-Key reused)     | 409    | invalid_request_error |
| QueueFull (per-key queued lines)         | 429    | rate_limit_error      |
| Redis unreachable (bulk routes)          | 503    | server_error          |
| anything else                            | 500    | server_error (no internals in the body) |
"""

from __future__ import annotations

import logging
import re

from litestar import Request, Response
from litestar.exceptions import (
    ClientException,
    HTTPException,
    MethodNotAllowedException,
    NotFoundException,
    ValidationException,
)
from litestar.status_codes import HTTP_413_REQUEST_ENTITY_TOO_LARGE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from engine.errors import EngineDead, EngineOverloaded, InvalidRequest
from gateway.schemas.errors import ErrorDetail, ErrorResponse
from workers.jobs import JobConflict, QueueFull

logger = logging.getLogger("flowgate.gateway")

_MISSING_FIELD = re.compile(r"missing required field `([^`]+)`")
_TYPE_BY_STATUS = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class ClientDisconnected(Exception):
    """The client closed the connection before the answer was ready; its engine work was aborted."""


class ModelNotFound(Exception):
    def __init__(self, model: str):
        super().__init__(f"The model `{model}` does not exist.")
        self.model = model


class AuthenticationFailed(Exception):
    """Missing, malformed, unknown or revoked: one message for all, so a caller learns nothing."""

    message = "Incorrect API key provided. You can find your API key in your flowgate administrator's records."


class PermissionDenied(Exception):
    def __init__(self, message: str, param: str | None = None):
        super().__init__(message)
        self.message, self.param = message, param


class RateLimited(Exception):
    def __init__(self, message: str, *, headers: dict[str, str], code: str = "rate_limit_exceeded"):
        super().__init__(message)
        self.message, self.headers, self.code = message, headers, code


class ApiError(Exception):
    """An error a route decides on directly: its status, OpenAI code and param."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param


class JSONBodyRequest(Request):
    """Turns the body decoding failures msgspec raises as plain Python errors into 400s, and reads only JSON
    (or an unlabelled body) as JSON: OpenAI answers a text/plain body with a 400."""

    async def json(self):
        media_type = self.headers.get("content-type", "application/json").split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not media_type.endswith("+json"):
            raise ClientException(f"Content-Type must be application/json, got {media_type!r}.")
        try:
            return await super().json()
        except UnicodeDecodeError as exc:
            raise ClientException("The request body is not valid UTF-8.") from exc
        except RecursionError as exc:
            raise ClientException("The JSON body is nested too deeply.") from exc


def error_response(status: int, message: str, *, param=None, code=None, headers=None) -> Response:
    error_type = "server_error" if status >= 500 else _TYPE_BY_STATUS.get(status, "invalid_request_error")
    body = ErrorResponse(ErrorDetail(message=message, type=error_type, param=param, code=code))
    return Response(body, status_code=status, headers=headers)


def openai_exception_handler(request: Request, exc: Exception) -> Response:
    match exc:
        case InvalidRequest():
            return error_response(400, exc.message, param=exc.param, code=exc.code)
        case AuthenticationFailed():
            return error_response(401, exc.message, code="invalid_api_key")
        case PermissionDenied():
            return error_response(403, exc.message, param=exc.param, code="permission_denied")
        case RateLimited():
            return error_response(429, exc.message, code=exc.code, headers=exc.headers)
        case EngineOverloaded() | EngineDead():
            return error_response(503, exc.message, code=exc.code, headers={"Retry-After": "1"})
        case ApiError():
            headers = {"Retry-After": "5"} if exc.status in (429, 503) else None
            return error_response(exc.status, exc.message, param=exc.param, code=exc.code, headers=headers)
        case RedisConnectionError() | RedisTimeoutError():
            return error_response(503, "The job store is unavailable; try again shortly.", code="bulk_unavailable",
                                  headers={"Retry-After": "5"})
        case JobConflict():
            return error_response(409, str(exc), code="idempotency_key_reused")
        case QueueFull():
            return error_response(429, str(exc), code="queued_lines_limit", headers={"Retry-After": "30"})
        case ModelNotFound():
            return error_response(404, str(exc), param="model", code="model_not_found")
        case ClientDisconnected():  # nobody reads this; nginx's code for it, and no error log
            return error_response(499, "The client closed the request.", code="client_closed_request")
        case ValidationException():
            return _validation_error(exc)
        case NotFoundException():
            _count_unrouted(request, 404)
            return error_response(404, f"Invalid URL ({request.method} {request.url.path})", code="not_found")
        case MethodNotAllowedException():
            _count_unrouted(request, 405)
            return error_response(405, f"Method {request.method} is not allowed on {request.url.path}")
        case HTTPException() if exc.status_code == HTTP_413_REQUEST_ENTITY_TOO_LARGE:
            return error_response(413, "The request body is too large.", code="request_too_large")
        case HTTPException() if exc.status_code < 500:
            return error_response(exc.status_code, f"Could not parse the request: {exc.detail}")
    logger.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(500, "The server had an error while processing your request.")


def _count_unrouted(request: Request, status: int) -> None:
    """The router refuses unknown paths and methods before any middleware runs: count them here, once."""
    if "path_template" not in request.scope:
        from gateway.telemetry.metrics import REQUESTS

        REQUESTS.labels("unmatched", str(status), "unknown").inc()  # no key was looked at


def _validation_error(exc: ValidationException) -> Response:
    """Litestar reports msgspec's complaint per field as extra=[{"message", "key", "source"}]."""
    problems = exc.extra if isinstance(exc.extra, list) else []
    if not problems:
        return error_response(400, "Invalid request body.")
    first = problems[0]
    key = first.get("key")
    if key == "data" and first.get("message") == "'data'":  # Litestar's wording for a missing body
        return error_response(400, "A JSON request body is required.")
    message = first.get("message")
    param = None if key in (None, "data") else key
    where = f" (at `{param}`)" if param else ""
    if missing := _MISSING_FIELD.search(message or ""):
        param = f"{param}.{missing[1]}" if param else missing[1]
    return error_response(400, f"Invalid request body: {message}{where}", param=param)
