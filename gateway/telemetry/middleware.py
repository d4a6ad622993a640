"""Counts every routed request by path template, status and tier, and names its server span by that template.

Not Litestar's PrometheusMiddleware: that one fixes its labels before the handler runs, so the tier (known only
once authentication has attached the identity) could not be a label, and it names its metrics itself.
"""

from __future__ import annotations

from litestar.middleware import ASGIMiddleware
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from gateway.auth.identity import ANONYMOUS, SCOPE_KEY
from gateway.telemetry.metrics import REQUESTS
from gateway.telemetry.tracing import name_server_span


class RequestCounter(ASGIMiddleware):
    scopes = ("http",)

    async def handle(self, scope: Scope, receive: Receive, send: Send, next_app: ASGIApp) -> None:
        status = 500  # if nothing is sent, the server answers 500
        route = scope.get("path_template", "unmatched")
        name_server_span(scope["method"], route)

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await next_app(scope, receive, send_wrapper)
        finally:
            tier = scope.get(SCOPE_KEY, ANONYMOUS).tier
            REQUESTS.labels(route, str(status), tier).inc()
