"""/admin/*: operator routes, authenticated by FLOWGATE_ADMIN_KEY instead of an API key."""

from __future__ import annotations

from litestar import Controller, get
from litestar.datastructures import State


class AdminController(Controller):
    path = "/admin"
    tags = ("admin",)

    @get("/usage", summary="The usage ledger: per key and per tier requests, tokens and errors by status")
    async def usage(self, state: State) -> dict[str, dict[str, int]]:
        return await state.tiers.ledger.read()
