"""What handlers get injected: the engine started in the app's lifespan, and the served model check."""

from __future__ import annotations

from litestar.datastructures import State

from engine.client import AsyncEngine
from gateway.errors import ModelNotFound


def provide_engine(state: State) -> AsyncEngine:
    return state.engine


def require_model(requested: str, state: State) -> str:
    """The served name a request's `model` refers to, or a 404 naming the unknown one.

    `state.served_model_names`: the name /v1/models lists first, then the alias or path it was started from."""
    if requested not in state.served_model_names:
        raise ModelNotFound(requested)
    return state.served_model_names[0]
