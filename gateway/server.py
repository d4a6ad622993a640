"""`flowgate serve`: the app under uvicorn, configured from flags and FLOWGATE_* variables."""

from __future__ import annotations

import uvicorn

from gateway.app import create_app
from gateway.settings import Settings


def serve(
    model: str | None = None, host: str | None = None, port: int | None = None, quantization: str | None = None
) -> None:
    settings = Settings.from_env(model=model, host=host, port=port, quantization=quantization)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        timeout_graceful_shutdown=5,
    )
