"""POST /v1/completions."""

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
from gateway.schemas.completions import Completion, CompletionRequest
from gateway.serving_completions import create_completion


class CompletionsController(Controller):
    path = "/v1/completions"
    tags = ("completions",)

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a text completion (server-sent events when `stream` is true)")
    async def create(
        self, data: JSONBody[CompletionRequest], engine: NamedDependency[AsyncEngine], state: State, request: Request,
        identity: NamedDependency[Identity],
    ) -> Completion | Stream:
        return await create_completion(data, require_model(data.model, state), engine, request, identity=identity)
