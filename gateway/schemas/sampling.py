"""Request fields shared by /v1/chat/completions and /v1/completions."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway.schemas.usage import StreamOptions

MAX_N = 16
MAX_STOP_SEQUENCES = 4  # as OpenAI

Temperature = Annotated[float, Meta(ge=0.0, le=2.0)]
TopP = Annotated[float, Meta(gt=0.0, le=1.0)]
Penalty = Annotated[float, Meta(ge=-2.0, le=2.0)]
Bias = Annotated[float, Meta(ge=-100.0, le=100.0)]
MaxTokens = Annotated[int, Meta(ge=1)]
Seed = Annotated[int, Meta(ge=-(2**63), le=2**63 - 1)]
Stop = str | Annotated[list[str], Meta(max_length=MAX_STOP_SEQUENCES)]
ServiceTier = Literal["auto", "default", "flex", "priority"]


class SamplingFields(msgspec.Struct, kw_only=True):
    model: str
    temperature: Temperature | None = None  # None: OpenAI's default of 1
    top_p: TopP | None = None
    n: Annotated[int, Meta(ge=1, le=MAX_N)] = 1
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: Penalty = 0.0
    frequency_penalty: Penalty = 0.0
    logit_bias: dict[str, Bias] | None = None  # token id (as a string) -> bias added to its logit
    user: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    priority: Annotated[int, Meta(ge=-(2**31), le=2**31 - 1)] = 0  # lower runs first; may only lower the key's
    service_tier: ServiceTier | None = None  # OpenAI's; never above the key's own tier
    ignore_eos: bool = False  # vLLM's extension: generate max_tokens whatever the model says (benchmarks)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage
