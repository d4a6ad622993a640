"""The engine's per-token logprobs in OpenAI's two shapes (chat and legacy completions)."""

from __future__ import annotations

from engine.protocol import TokenLogprob
from gateway.schemas.chat import ChoiceLogprobs
from gateway.schemas.chat import TokenLogprob as ChatTokenLogprob
from gateway.schemas.chat import TopLogprob as ChatTopLogprob
from gateway.schemas.completions import CompletionLogprobs


def chat_logprobs(logprobs: list[TokenLogprob] | None) -> ChoiceLogprobs | None:
    if logprobs is None:
        return None
    return ChoiceLogprobs(
        content=[
            ChatTokenLogprob(
                token=lp.token,
                logprob=lp.logprob,
                bytes=list(lp.token.encode()),
                top_logprobs=[ChatTopLogprob(token=t.token, logprob=t.logprob, bytes=list(t.token.encode()))
                              for t in lp.top],
            )
            for lp in logprobs
        ]
    )


def completion_logprobs(logprobs: list[TokenLogprob] | None, text_offset: int) -> CompletionLogprobs | None:
    """`text_offset` is where the first token's text starts in the choice's text (after any echo)."""
    if logprobs is None:
        return None
    offsets = []
    for lp in logprobs:
        offsets.append(text_offset)
        text_offset += len(lp.token)
    return CompletionLogprobs(
        tokens=[lp.token for lp in logprobs],
        token_logprobs=[lp.logprob for lp in logprobs],
        top_logprobs=[{t.token: t.logprob for t in lp.top} for lp in logprobs],
        text_offset=offsets,
    )
