"""Degenerate repeats under a JSON grammar: the loop small models fall into once the grammar holds them.

Greedy decoding under a schema tends to copy: the same array element again and again until the budget
runs out, or the same tool call until the call cap. Two guards, both driven by `JsonScanner`, which
follows the output's JSON structure byte by byte (strings and escapes included):

    sibling penalty    while the current element of a JSON array is, so far, an exact copy of an earlier
                       element of that array, every token that would continue the copy with content
                       (not just punctuation), or complete it, loses `penalty` from its logit. Punctuation
                       on the way is exempt: two elements may well share `{"city": "`; the values are
                       where a copy turns into a loop. A model sure of a repeat still writes it (a soft
                       nudge, not a ban).
    end on a repeat    once a top-level value (a tool call) repeats an earlier one exactly, the output
                       ends at the first point the grammar may end: the repeat is dropped anyway, and a
                       model that keeps looping would run to the call cap.
"""

from __future__ import annotations

import bisect

import torch

_OPENERS = frozenset(b"{[")
_CLOSERS = frozenset(b"}]")
_NOT_CONTENT = frozenset(b'{}[],:" \n\t\r')


class TokenTexts:
    """The vocabulary as bytes, indexed for 'which tokens continue this text' (built once per backend)."""

    def __init__(self, token_bytes: list[bytes]):
        self.has_content = [any(b not in _NOT_CONTENT for b in text) for text in token_bytes]
        self._ids_by_text: dict[bytes, list[int]] = {}
        for token_id, text in enumerate(token_bytes):
            if text:
                self._ids_by_text.setdefault(text, []).append(token_id)
        self._sorted = sorted(self._ids_by_text)
        self._longest = max(map(len, self._sorted), default=0)

    def continuing(self, rest: bytes) -> list[int]:
        """Tokens whose text is a prefix of `rest` or starts with it."""
        ids = [i for k in range(1, min(len(rest), self._longest) + 1) for i in self._ids_by_text.get(rest[:k], ())]
        if len(rest) < self._longest:
            at = bisect.bisect_right(self._sorted, rest)  # rest itself was counted above
            while at < len(self._sorted) and self._sorted[at].startswith(rest):
                ids.extend(self._ids_by_text[self._sorted[at]])
                at += 1
        return ids


class _Array:
    __slots__ = ("elements", "start")

    def __init__(self):
        self.elements: list[bytes] = []  # the text of each finished element
        self.start: int | None = None  # where the element being written began


class JsonScanner:
    """The JSON structure of an output so far; text outside any JSON value (tool-call markup) is skipped."""

    def __init__(self):
        self._text = bytearray()
        self._stack: list[_Array | None] = []  # an _Array per open array, None per open object
        self._in_string = False
        self._escaped = False
        self._top_start = 0
        self._top_values: set[bytes] = set()
        self.repeated_top_value = False

    def feed(self, data: bytes) -> None:
        for byte in data:
            self._byte(byte)

    def copied_rests(self) -> list[bytes]:
        """For each open array, what would complete each earlier element that the element being written
        copies so far (empty when it copies none)."""
        rests = []
        for array in self._stack:
            if array is None or not array.elements:
                continue
            current = bytes(self._text[array.start:]) if array.start is not None else b""
            rests += [element[len(current):] for element in dict.fromkeys(array.elements)
                      if len(element) > len(current) and element.startswith(current)]
        return rests

    def _byte(self, byte: int) -> None:
        at = len(self._text)
        self._text.append(byte)
        if self._in_string:
            if self._escaped:
                self._escaped = False
            elif byte == 0x5C:  # backslash
                self._escaped = True
            elif byte == 0x22:
                self._in_string = False
            return
        if byte in _CLOSERS and self._stack:
            frame = self._stack.pop()
            if frame is not None:
                self._finish_element(frame, at)
            if not self._stack:
                self._finish_top_value(at + 1)
            return
        if not self._stack and byte not in _OPENERS:
            return  # markup between top-level values
        if byte == 0x2C:  # comma
            if self._stack[-1] is not None:
                self._finish_element(self._stack[-1], at)
            return
        if byte in b" \n\t\r:":
            return
        self._begin_value(at)
        if byte == 0x22:
            self._in_string = True
        elif byte in _OPENERS:
            if not self._stack:
                self._top_start = at
            self._stack.append(_Array() if byte == 0x5B else None)

    def _begin_value(self, at: int) -> None:
        if self._stack and self._stack[-1] is not None and self._stack[-1].start is None:
            self._stack[-1].start = at

    def _finish_element(self, array: _Array, end: int) -> None:
        if array.start is not None:
            array.elements.append(bytes(self._text[array.start:end]))
            array.start = None

    def _finish_top_value(self, end: int) -> None:
        value = bytes(self._text[self._top_start:end])
        self.repeated_top_value = self.repeated_top_value or value in self._top_values
        self._top_values.add(value)


class RepeatGuard:
    """One sequence's repeat guards (see the module docstring); GrammarLogitsProcessor drives it."""

    def __init__(self, token_bytes: list[bytes], stop_ids: list[int], end_on_repeat: bool,
                 penalty: float = 0.0, texts: TokenTexts | None = None):
        """`texts` (the index the penalty searches) is needed only with a penalty."""
        self._token_bytes = token_bytes
        self._stop_ids = stop_ids
        self._end_on_repeat = end_on_repeat
        self._penalty = penalty
        self._texts = texts
        self._scanner = JsonScanner()

    def accept(self, token_id: int) -> None:
        self._scanner.feed(self._token_bytes[token_id])

    def apply(self, logits: torch.Tensor) -> None:
        if self._end_on_repeat and self._scanner.repeated_top_value:
            stops = logits[self._stop_ids]
            if bool(torch.isfinite(stops).any()):  # the grammar may end here
                logits.fill_(float("-inf"))
                logits[self._stop_ids] = stops
                return
        if self._penalty:
            copying = {i for rest in self._scanner.copied_rests() for i in self._texts.continuing(rest)
                       if self._texts.has_content[i] or len(self._token_bytes[i]) >= len(rest)}
            if copying:
                logits[sorted(copying)] -= self._penalty
