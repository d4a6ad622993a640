"""POST /v1/completions (the legacy text completion API)."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway.schemas.sampling import SamplingFields
from gateway.schemas.usage import Usage

# msgspec allows one array type per union, so a batch of token-id prompts is checked in the handler:
# a string, a list of strings, a list of token ids, or a list of lists of token ids.
Prompt = str | Annotated[list[str | int | list[int]], Meta(min_length=1)]


class CompletionRequest(SamplingFields, kw_only=True):
    prompt: Prompt
    max_tokens: Annotated[int, Meta(ge=1)] | None = 16  # OpenAI's default for this endpoint
    logprobs: Annotated[int, Meta(ge=0, le=20)] | None = None
    echo: bool = False
    suffix: str | None = None  # not supported: rejected when set
    best_of: Annotated[int, Meta(ge=1)] | None = None  # only best_of == n is supported


class CompletionLogprobs(msgspec.Struct, kw_only=True):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]]
    text_offset: list[int]


class CompletionChoice(msgspec.Struct, kw_only=True):
    index: int
    text: str
    logprobs: CompletionLogprobs | None = None
    finish_reason: str | None = None


class Completion(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None  # absent on stream chunks unless it is the usage chunk
    system_fingerprint: str | None = None
    service_tier: str | None = None  # the tier actually used
