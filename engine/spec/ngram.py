"""Prompt-lookup drafting: continue the sequence the way it went after the last earlier occurrence of its
final n-gram (in the prompt or the output). Costs no model; shines where the output copies the input."""

from __future__ import annotations

MIN_N = 1
MAX_N = 4


class NgramIndex:
    """One sequence's n-grams (MIN_N..MAX_N tokens), each mapped to the end of its latest occurrence; the
    longest n-gram that ends the sequence and occurred before wins.

    Built incrementally: a sequence's token_ids only ever grow (drafts never enter them), so each call
    indexes just the new tokens. The final n-gram is indexed only once a later token follows it, so a
    lookup never finds the suffix itself.
    """

    __slots__ = ("_last_end", "_next_end")

    def __init__(self):
        self._last_end: dict[tuple[int, ...], int] = {}
        self._next_end = MIN_N

    def propose(self, tokens: list[int], k: int) -> list[int]:
        num_tokens = len(tokens)
        for end in range(self._next_end, num_tokens):
            for n in range(MIN_N, min(MAX_N, end) + 1):
                self._last_end[tuple(tokens[end - n : end])] = end
        self._next_end = max(self._next_end, num_tokens)
        for n in range(min(MAX_N, num_tokens), MIN_N - 1, -1):
            end = self._last_end.get(tuple(tokens[num_tokens - n :]))
            if end is not None:
                return _copy_from(tokens, end, k)
        return []


def _copy_from(tokens: list[int], start: int, k: int) -> list[int]:
    """k tokens from `start` on; past the end the copy continues from itself (a repeating period)."""
    draft: list[int] = []
    num_tokens = len(tokens)
    for i in range(start, start + k):
        draft.append(tokens[i] if i < num_tokens else draft[i - num_tokens])
    return draft
