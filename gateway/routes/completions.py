"""POST /v1/completions."""

from __future__ import annotations

from litestar import Controller, Request, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream

from gateway.dependencies import require_model
from gateway.routes.errors import ERROR_RESPONSES
from gateway.schemas.completions import Completion, CompletionRequest
from gateway.serving_completions import create_completion
from gateway.tiering import TieredEngine


class CompletionsController(Controller):
    path = "/v1/completions"
    tags = ("completions",)

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a text completion (server-sent events when `stream` is true)")
    async def create(
        self, data: JSONBody[CompletionRequest], tiered: NamedDependency[TieredEngine], state: State, request: Request
    ) -> Completion | Stream:
        return await create_completion(data, require_model(data.model, state), tiered.bind(data), request)
