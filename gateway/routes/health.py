"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio

from litestar import get
from litestar.di import NamedDependency

from engine.client import AsyncEngine
from engine.errors import EngineDead
from gateway.schemas.health import Health, Readiness

READY_TIMEOUT_S = 30.0  # a long prefill step on a busy CPU can take seconds


@get("/health", sync_to_thread=False, tags=("health",), summary="The process is up (never waits on the model)")
def health() -> Health:
    return Health()


@get("/ready", tags=("health",), summary="The model is loaded and the engine loop answers, with its stats")
async def ready(engine: NamedDependency[AsyncEngine]) -> Readiness:
    if not engine.is_alive():
        raise EngineDead("the engine process has stopped")
    try:
        # The engine answers between steps, so a reply proves its loop is running.
        stats = await asyncio.wait_for(engine.stats(), READY_TIMEOUT_S)
    except TimeoutError as exc:
        raise EngineDead(f"the engine did not answer within {READY_TIMEOUT_S:.0f} s") from exc
    return Readiness(model=engine.model_info.name, engine=stats)
