"""Server-sent events framing, as OpenAI sends them."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable

import msgspec

from engine.errors import EngineError
from gateway.schemas.errors import ErrorDetail, ErrorResponse

logger = logging.getLogger("flowgate.gateway")

_encode = msgspec.json.Encoder().encode

DONE = b"data: [DONE]\n\n"
MEDIA_TYPE = "text/event-stream"
# The content type as a header too: Litestar lets a handler's own media type (JSON, for handlers that answer
# either a JSON body or a stream) override a Stream's media_type.
HEADERS = {"Content-Type": MEDIA_TYPE, "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def data(payload) -> bytes:
    return b"data: " + _encode(payload) + b"\n\n"


def event(name: str, payload) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encode(payload) + b"\n\n"


INTERNAL_ERROR = "The server had an error while processing your request."

ErrorEvent = Callable[[str, str | None, str | None], bytes]  # (message, code, param) -> the framed event


async def guarded(events: AsyncIterator[bytes], error_event: ErrorEvent, label: str) -> AsyncIterator[bytes]:
    """A failure after the 200 went out can only be reported in the stream: one error event ends it."""
    try:
        async for chunk in events:
            yield chunk
    except EngineError as exc:
        yield error_event(exc.message, exc.code, exc.param)
    except Exception:
        logger.exception("stream %s failed", label)
        yield error_event(INTERNAL_ERROR, "internal_error", None)


def error(message: str, code: str | None, param: str | None = None) -> bytes:
    """A failure after the 200 was sent; the openai SDK raises it as an APIError."""
    error_type = "invalid_request_error" if code in ("invalid_request", "context_length_exceeded") else "server_error"
    return data(ErrorResponse(ErrorDetail(message=message, type=error_type, param=param, code=code)))
