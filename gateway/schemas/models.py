"""GET /v1/models."""

from __future__ import annotations

from typing import Literal

import msgspec


class Model(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "flowgate"
    max_model_len: int  # not in OpenAI's shape; clients that size prompts use it (vLLM reports it too)


class ModelList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Model]
