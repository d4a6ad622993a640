"""OpenAI request parameters -> the engine's SamplingParams (every rejection names its `param`)."""

from __future__ import annotations

from engine.errors import InvalidRequest
from engine.protocol import GuidedDecoding, SamplingParams
from gateway.schemas.sampling import SamplingFields


def sampling_params(
    body: SamplingFields,
    *,
    max_tokens: int | None,
    logprobs: int | None,
    vocab_size: int,
    guided: GuidedDecoding | None = None,
) -> SamplingParams:
    params = SamplingParams(
        n=body.n,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        presence_penalty=body.presence_penalty,
        frequency_penalty=body.frequency_penalty,
        logit_bias=logit_bias(body.logit_bias, vocab_size),
        seed=body.seed,
        max_tokens=max_tokens,
        stop=stop_sequences(body.stop),
        logprobs=logprobs,
        guided=guided,
        ignore_eos=body.ignore_eos,
    )
    params.validate()
    return params


def stop_sequences(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [s for s in ([stop] if isinstance(stop, str) else stop) if s]


def logit_bias(bias: dict[str, float] | None, vocab_size: int) -> dict[int, float] | None:
    if not bias:
        return None
    converted = {}
    for key, value in bias.items():
        if not (key.isascii() and key.isdigit()) or int(key) >= vocab_size:
            raise InvalidRequest(
                f"logit_bias keys must be token ids in [0, {vocab_size}); got {key!r}", param="logit_bias"
            )
        converted[int(key)] = value
    return converted
