"""POST /v1/chat/completions."""

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
from gateway.schemas.chat import ChatCompletion, ChatCompletionRequest
from gateway.serving_chat import create_chat_completion


class ChatController(Controller):
    path = "/v1/chat/completions"
    tags = ("chat",)

    @post(status_code=200, responses=ERROR_RESPONSES,
          summary="Create a chat completion (server-sent events when `stream` is true)")
    async def create(
        self, data: JSONBody[ChatCompletionRequest], engine: NamedDependency[AsyncEngine], state: State, request: Request,
        identity: NamedDependency[Identity],
    ) -> ChatCompletion | Stream:
        return await create_chat_completion(data, require_model(data.model, state), engine, request, identity=identity)
