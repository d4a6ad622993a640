"""GET /health and GET /ready."""

from __future__ import annotations

from typing import Literal

import msgspec

from engine.protocol import EngineStats


class Health(msgspec.Struct, kw_only=True):
    status: Literal["ok"] = "ok"


class Readiness(msgspec.Struct, kw_only=True):
    status: Literal["ready"] = "ready"
    model: str
    engine: EngineStats  # the engine loop's own counters (running, waiting, KV blocks, throughput)
