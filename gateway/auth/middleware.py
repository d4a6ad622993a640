"""Authentication, in one place: every request except the open paths presents a key (`Authorization:
Bearer` or Azure's `api-key:`), and its identity and key record go into the ASGI scope for
`provide_identity` and the engine wrapper. Headers that claim an identity or tier (x-tier, x-user, ...)
are never read. The same wrapper adds the rate-limit headers to every response and counts error statuses
in the usage ledger."""

from __future__ import annotations

import hmac

from litestar.datastructures import Headers, MutableScopeHeaders
from litestar.enums import ScopeType
from litestar.middleware import ASGIMiddleware

from gateway.auth.identity import SCOPE_KEY
from gateway.background import spawn
from gateway.errors import AuthenticationFailed

OPEN_PATHS = frozenset({"/health", "/ready", "/metrics"})
OPEN_PREFIXES = ("/docs",)
ADMIN_PREFIX = "/admin/"
RECORD_KEY = "flowgate.key"  # the KeyRecord (None in open mode)
RATELIMIT_KEY = "flowgate.ratelimit"  # x-ratelimit-* headers for this response
TIER_KEY = "flowgate.tier"  # the tier the request actually ran under


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def presented_key(headers: Headers) -> str | None:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.partition(" ")
        return token.strip() if scheme.lower() == "bearer" else None
    return headers.get("api-key")


class AuthMiddleware(ASGIMiddleware):
    scopes = (ScopeType.HTTP,)

    async def handle(self, scope, receive, send, next_app) -> None:
        path = scope["path"]
        if is_open(path) or scope["method"] == "OPTIONS":  # CORS preflights carry no credentials
            await next_app(scope, receive, send)
            return
        tiers = scope["litestar_app"].state.tiers
        presented = presented_key(Headers.from_scope(scope))
        if path.startswith(ADMIN_PREFIX):
            admin = tiers.config.admin_key
            if not (admin and presented and hmac.compare_digest(presented.encode(), admin.encode())):
                raise AuthenticationFailed()
            await next_app(scope, receive, send)
            return
        record = await tiers.authenticate(presented)
        scope[RECORD_KEY] = record
        if record is not None:
            scope[SCOPE_KEY] = record.identity

        async def send_with_headers(message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders(message)
                for name, value in scope.get(RATELIMIT_KEY, {}).items():
                    if name not in headers:
                        headers[name] = value
                if record is not None and message["status"] >= 400:
                    spawn(tiers.ledger.record(record.key_id, record.tier, **{f"errors_{message['status']}": 1}))
            await send(message)

        await next_app(scope, receive, send_with_headers)
