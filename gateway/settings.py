"""Gateway settings: CLI flags win over FLOWGATE_* environment variables, which win over defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from engine.config import EngineConfig
from gateway.request_defaults import RequestDefaults


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024  # larger bodies get a 413 before any parsing
    log_level: str = "info"
    engine: EngineConfig = field(default_factory=EngineConfig)
    request_defaults: RequestDefaults = field(default_factory=RequestDefaults)  # gateway.request_defaults

    def __post_init__(self):
        if not 0 <= self.port <= 65535:
            raise ValueError("port must be in [0, 65535]")
        if self.max_body_bytes < 1024:
            raise ValueError("max_body_bytes must be at least 1024")

    @classmethod
    def from_env(
        cls, *, model: str | None = None, host: str | None = None, port: int | None = None, **engine_overrides
    ) -> Settings:
        """FLOWGATE_HOST, FLOWGATE_PORT, FLOWGATE_MAX_BODY_BYTES, FLOWGATE_LOG_LEVEL and every
        FLOWGATE_<ENGINE FIELD> (e.g. FLOWGATE_KV_CACHE_BYTES); explicit arguments (None = unset) win."""
        env = os.environ
        values = {
            "host": host or env.get("FLOWGATE_HOST"),
            "port": port if port is not None else _int_or_none(env.get("FLOWGATE_PORT")),
            "max_body_bytes": _int_or_none(env.get("FLOWGATE_MAX_BODY_BYTES")),
            "log_level": env.get("FLOWGATE_LOG_LEVEL"),
        }
        engine = EngineConfig.from_env(model=model, **engine_overrides)
        return cls(engine=engine, request_defaults=RequestDefaults.from_env(),
                   **{k: v for k, v in values.items() if v is not None})


def _int_or_none(raw: str | None) -> int | None:
    return None if raw is None else int(raw)
