"""The identity a request runs under: what handlers, jobs, metrics and traces see instead of the API key."""

from __future__ import annotations

from typing import Literal

import msgspec
from litestar import Request

Tier = Literal["paid", "free", "batch"]

# Engine priority per tier: lower runs first, and a lower-priority request is preempted first.
TIER_PRIORITY: dict[str, int] = {"paid": 0, "free": 1, "batch": 2}


class Identity(msgspec.Struct, frozen=True, kw_only=True):
    key_id: str  # public: safe in logs, metrics and traces
    tier: Tier
    name: str | None = None


# Open mode (no keys configured): every request runs as this identity.
ANONYMOUS = Identity(key_id="anonymous", tier="paid")

SCOPE_KEY = "flowgate.identity"


def provide_identity(request: Request) -> Identity:
    """The identity authentication attached to the request's scope; anonymous in open mode."""
    return request.scope.get(SCOPE_KEY, ANONYMOUS)  # type: ignore[return-value]
