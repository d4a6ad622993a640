"""GET /v1/models and /v1/models/{model_id}."""

from __future__ import annotations

from litestar import Controller, get
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath

from engine.client import AsyncEngine
from gateway.dependencies import require_model
from gateway.schemas.models import Model, ModelList


class ModelsController(Controller):
    path = "/v1/models"
    tags = ("models",)

    @get(summary="List the served models")
    async def list_models(self, engine: NamedDependency[AsyncEngine]) -> ModelList:
        return ModelList(data=[_model(engine)])

    @get("/{model_id:path}", summary="Describe one model (ids may contain slashes)")
    async def retrieve(self, model_id: FromPath[str], engine: NamedDependency[AsyncEngine], state: State) -> Model:
        require_model(model_id.lstrip("/"), state)
        return _model(engine)


def _model(engine: NamedDependency[AsyncEngine]) -> Model:
    info = engine.model_info
    return Model(id=info.name, created=info.created, max_model_len=info.max_model_len)
