"""The error responses every /v1 POST endpoint documents in the OpenAPI schema."""

from __future__ import annotations

from litestar.openapi import ResponseSpec

from gateway.schemas.errors import ErrorResponse

ERROR_RESPONSES = {
    400: ResponseSpec(ErrorResponse, description="Invalid request (the `param` names the field)"),
    404: ResponseSpec(ErrorResponse, description="Unknown model"),
    413: ResponseSpec(ErrorResponse, description="Request body too large"),
    503: ResponseSpec(ErrorResponse, description="Engine overloaded or unavailable"),
}
