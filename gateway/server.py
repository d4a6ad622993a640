"""`flowgate serve`: the app under uvicorn, configured from flags and FLOWGATE_* variables."""

from __future__ import annotations

import uvicorn

from gateway.embedded import embedded_bulk
from gateway.settings import Settings


def serve(model: str | None = None, host: str | None = None, port: int | None = None, **engine_overrides) -> None:
    settings = Settings.from_env(model=model, host=host, port=port, **engine_overrides)
    with embedded_bulk(settings):
        # Imported once the embedded Redis is up: the Celery app reads FLOWGATE_REDIS_URL when it is created.
        from gateway.app import create_app

        uvicorn.run(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            timeout_graceful_shutdown=5,
        )
