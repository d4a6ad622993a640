"""Server-sent events framing, as OpenAI sends them."""

from __future__ import annotations

import msgspec

from gateway.schemas.errors import ErrorDetail, ErrorResponse

_encode = msgspec.json.Encoder().encode

DONE = b"data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def data(payload) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


def event(name: str, payload) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(payload) + b"\n\n"


def error(message: str, code: str | None, param: str | None = None) -> bytes:
    """A failure after the 200 was sent; the openai SDK raises it as an APIError."""
    error_type = "invalid_request_error" if code in ("invalid_request", "context_length_exceeded") else "server_error"
    return data(ErrorResponse(ErrorDetail(message=message, type=error_type, param=param, code=code)))
