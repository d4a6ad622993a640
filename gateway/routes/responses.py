"""POST /v1/responses."""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream

from engine.client import AsyncEngine
from gateway.auth.identity import Identity
from gateway.dependencies import require_model
from gateway.routes.errors import ERROR_RESPONSES
from gateway.schemas.responses import ResponseObject, ResponsesRequest
from gateway.serving_responses import create_response


class ResponsesController(Controller):
    path = "/v1/responses"
    tags = ("responses",)

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a model response (stateless; Responses events when `stream` is true)")
    async def create(
        self, data: JSONBody[ResponsesRequest], engine: NamedDependency[AsyncEngine], state: State, request: Request,
        identity: NamedDependency[Identity],
    ) -> ResponseObject | Stream:
        return await create_response(data, require_model(data.model, state), engine, request, identity=identity)
