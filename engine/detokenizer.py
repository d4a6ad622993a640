"""Incremental detokenization with stop strings.

Text is produced by decoding a short window of tokens twice (with and without the newest ones), so a
multi-byte character split across tokens is emitted only once it is whole (never a U+FFFD), and a
leading-space token decodes as it would in context. Deltas hold back the tail that could still become a
stop string, so a stop string split across tokens never leaks into the output.
"""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str: ...


class IncrementalDetokenizer:
    def __init__(self, tokenizer: Decoder, token_ids: list[int], num_prompt_tokens: int,
                 stop: list[str], include_stop_str_in_output: bool = False):
        self.tokenizer = tokenizer
        self.token_ids = token_ids  # the sequence's own list: prompt then output, appended by the engine
        self.prefix_offset = max(num_prompt_tokens - 5, 0)
        self.read_offset = num_prompt_tokens
        self.stop = [s for s in stop if s]
        self.include_stop = include_stop_str_in_output
        self.holdback = max((len(s) for s in self.stop), default=1) - 1
        self.output_text = ""
        self.num_emitted_chars = 0

    def update(self) -> str | None:
        """Decode the tokens appended since the last call; returns the stop string hit, if any."""
        prefix_text = self.tokenizer.decode(self.token_ids[self.prefix_offset : self.read_offset])
        full_text = self.tokenizer.decode(self.token_ids[self.prefix_offset :])
        if len(full_text) <= len(prefix_text) or full_text.endswith("\ufffd"):
            return None
        old_len = len(self.output_text)
        self.output_text += full_text[len(prefix_text) :]
        self.prefix_offset, self.read_offset = self.read_offset, len(self.token_ids)
        return self._check_stop(old_len)

    def _check_stop(self, old_len: int) -> str | None:
        """The stop string that occurs first in the new text (a match may begin in older text)."""
        hits = []
        for stop in self.stop:
            start = self.output_text.find(stop, max(0, old_len - len(stop) + 1))
            if start != -1:
                hits.append((start, stop))
        if not hits:
            return None
        start, stop = min(hits)
        self.output_text = self.output_text[: start + (len(stop) if self.include_stop else 0)]
        return stop

    def take_delta(self, finished: bool) -> str:
        """Text not yet emitted; while running, keep back what might be the start of a stop string."""
        end = len(self.output_text) if finished else max(self.num_emitted_chars, len(self.output_text) - self.holdback)
        delta = self.output_text[self.num_emitted_chars : end]
        self.num_emitted_chars = end
        return delta
