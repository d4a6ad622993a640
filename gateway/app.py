"""The Litestar application: controllers, the engine started in the lifespan and injected, one error handler."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

from litestar import Litestar
from litestar.di import Provide
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin

from engine.client import AsyncEngine
from gateway.auth import provide_identity
from gateway.auth.config import AuthConfig
from gateway.auth.middleware import AuthMiddleware
from gateway.auth.service import Tiers
from gateway.bulk import bulk_lifespan, provide_jobs
from gateway.dependencies import provide_engine
from gateway.errors import JSONBodyRequest, openai_exception_handler
from gateway.routes.admin import AdminController
from gateway.routes.batches import BatchesController
from gateway.routes.chat import ChatController
from gateway.routes.completions import CompletionsController
from gateway.routes.files import FilesController
from gateway.routes.health import health, ready
from gateway.routes.jobs import JobsController
from gateway.routes.models import ModelsController
from gateway.routes.responses import ResponsesController
from gateway.settings import Settings
from gateway.telemetry import tracing
from gateway.telemetry.exposition import EngineStatsCollector, metrics_route
from gateway.telemetry.middleware import RequestCounter
from gateway.tiering import tiered_engine
from workers.telemetry import shutdown_tracing

VERSION = "0.1.0"


@asynccontextmanager
async def tiers_lifespan(app: Litestar) -> AsyncIterator[None]:
    app.state.tiers = Tiers(AuthConfig.from_env())
    try:
        yield
    finally:
        await app.state.tiers.close()


@asynccontextmanager
async def engine_lifespan(settings: Settings, app: Litestar) -> AsyncIterator[None]:
    engine = await AsyncEngine.start(settings.engine)
    app.state.engine = engine
    app.state.request_defaults = settings.request_defaults
    app.state.served_model_names = tuple(dict.fromkeys((engine.model_info.name, settings.engine.model)))
    try:
        yield
    finally:
        await engine.shutdown()
        shutdown_tracing()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or Settings.from_env()
    return Litestar(
        route_handlers=[ChatController, CompletionsController, ResponsesController, ModelsController, health, ready,
                        AdminController, metrics_route(EngineStatsCollector()),
                        JobsController, FilesController, BatchesController],
        plugins=tracing.setup(),
        lifespan=[tiers_lifespan, partial(engine_lifespan, settings), bulk_lifespan],
        middleware=[RequestCounter(), AuthMiddleware()],
        dependencies={
            "engine": Provide(provide_engine, sync_to_thread=False),
            "identity": Provide(provide_identity, sync_to_thread=False),
            "tiered": Provide(tiered_engine, sync_to_thread=False),
            "jobs": Provide(provide_jobs, sync_to_thread=False),
        },
        exception_handlers={Exception: openai_exception_handler},
        request_class=JSONBodyRequest,
        request_max_body_size=settings.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="flowgate",
            version=VERSION,
            description="An OpenAI-compatible API over flowgate's continuous-batching engine.",
            path="/docs",
            render_plugins=[SwaggerRenderPlugin(path="/"), JsonRenderPlugin(path="/openapi.json")],
        ),
    )
