"""Model text -> content and tool calls, incrementally; the non-streamed answer uses the same parser.

Rules, identical however the text is split into deltas:
- Content is the text outside `<tool_call>...</tool_call>`. Text that may be the start of `<tool_call>` is
  held back until it is known not to be, so markup never reaches content. Whitespace around a call and
  at the very end is dropped, so a turn that only calls tools has no content (None).
- `arguments` is the model's arguments JSON with the whitespace between tokens removed, byte for byte what
  it wrote otherwise (strings, escapes and numbers untouched); it is valid JSON because the grammar made it.
- A call is reported only once its arguments object is closed: its start (index, `call_<random>` id,
  name) and its argument fragments come out together. A call that max_tokens cuts short is never
  reported, not even its start, so no stream ever shows a broken call; `dropped_incomplete_call` says a
  call was dropped. The gateway then reports finish_reason "length" (or "tool_calls" if earlier calls
  were complete: finish_reason is "tool_calls" exactly when tool_calls is non-empty).
- A call identical to an earlier one (same name, same arguments text) is dropped, as is every call past
  `max_calls`: small models repeat a call until the budget ends, and an agent would run it twice.
  Indices stay consecutive over the calls reported; `num_dropped_calls` counts the rest. Text ending in a
  prefix of `<tool_call>` ("<", "<tool", ...) counts as such a cut call, so those last characters are
  never content.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass, field

from gateway.schemas.tools import FunctionCall, ToolCall
from gateway.tools.markup import CALL_CLOSE, CALL_OPEN

_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\{)')
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class ContentDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolCallStart:
    index: int
    id: str
    name: str


@dataclass(frozen=True, slots=True)
class ToolCallArgumentsDelta:
    index: int
    arguments: str


ToolCallEvent = ContentDelta | ToolCallStart | ToolCallArgumentsDelta


def new_call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass(slots=True)
class _Arguments:
    """Scans one JSON value, dropping whitespace outside strings, until the value closes."""

    fragments: list[str] = field(default_factory=list)
    depth: int = 0
    in_string: bool = False
    escaped: bool = False
    done: bool = False

    def feed(self, text: str) -> int:
        """Consume up to the end of the value; returns how many characters of `text` were used."""
        kept = []
        for i, char in enumerate(text):
            if self.in_string:
                kept.append(char)
                if self.escaped:
                    self.escaped = False
                elif char == "\\":
                    self.escaped = True
                elif char == '"':
                    self.in_string = False
                continue
            if char.isspace():
                continue
            kept.append(char)
            if char == '"':
                self.in_string = True
            elif char in "{[":
                self.depth += 1
            elif char in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    self._keep(kept)
                    return i + 1
        self._keep(kept)
        return len(text)

    def _keep(self, kept: list[str]) -> None:
        if kept:
            self.fragments.append("".join(kept))


class ToolCallParser:
    def __init__(self, max_calls: int | None = None):
        self._max_calls = max_calls
        self.num_dropped_calls = 0
        self._state = "text"  # text -> header -> arguments -> trailer -> text ...
        self._buffer = ""  # input not yet consumed by the current state
        self._held_whitespace = ""  # content whitespace that is dropped if a call or the end follows
        self._after_call = False  # whitespace right after a call is dropped as well
        self._name = ""
        self._arguments = _Arguments()
        self.content_parts: list[str] = []
        self.tool_calls: list[ToolCall] = []
        self.dropped_incomplete_call = False

    @property
    def content(self) -> str | None:
        return "".join(self.content_parts) or None

    def feed(self, text: str) -> list[ToolCallEvent]:
        self._buffer += text
        events: list[ToolCallEvent] = []
        while self._step(events):
            pass
        return events

    def finish(self) -> list[ToolCallEvent]:
        """End of output. Nothing still held back is content (it is a call cut short: the start of
        `<tool_call>`, its header or its arguments), so there are no events left to emit."""
        self.dropped_incomplete_call = bool(self._buffer) if self._state == "text" else self._state != "trailer"
        self._buffer = ""
        self._held_whitespace = ""
        return []

    def _step(self, events: list[ToolCallEvent]) -> bool:
        """Advance one state if the buffer allows; False when more input is needed."""
        if self._state == "text":
            start = self._buffer.find(CALL_OPEN)
            if start < 0:
                keep = _partial_suffix(self._buffer, CALL_OPEN)
                self._content(self._buffer[: len(self._buffer) - keep], events)
                self._buffer = self._buffer[len(self._buffer) - keep :]
                return False
            self._content(self._buffer[:start], events)
            self._held_whitespace = ""
            self._buffer = self._buffer[start + len(CALL_OPEN) :]
            self._state = "header"
            return True
        if self._state == "header":
            match = _HEADER.match(self._buffer)
            if match is None:
                if CALL_CLOSE in self._buffer:  # not a call the grammar could produce: skip it whole
                    self._buffer = self._buffer.split(CALL_CLOSE, 1)[1]
                    self._state = "text"
                    return True
                return False
            self._name = json.loads(match.group(1))
            self._arguments = _Arguments()
            self._buffer = self._buffer[match.end() :]
            self._state = "arguments"
            return True
        if self._state == "arguments":
            used = self._arguments.feed(self._buffer)
            self._buffer = self._buffer[used:]
            if not self._arguments.done:
                return False
            self._complete_call(events)
            self._state = "trailer"
            return True
        if CALL_CLOSE not in self._buffer:  # trailer: '}\n</tool_call>'
            return False
        self._buffer = self._buffer.split(CALL_CLOSE, 1)[1]
        self._state = "text"
        self._after_call = True
        return True

    def _complete_call(self, events: list[ToolCallEvent]) -> None:
        arguments = "".join(self._arguments.fragments)
        repeated = any(c.function.name == self._name and c.function.arguments == arguments for c in self.tool_calls)
        if repeated or (self._max_calls is not None and len(self.tool_calls) >= self._max_calls):
            self.num_dropped_calls += 1
            return
        index, call_id = len(self.tool_calls), new_call_id()
        events.append(ToolCallStart(index=index, id=call_id, name=self._name))
        events.extend(ToolCallArgumentsDelta(index=index, arguments=f) for f in self._arguments.fragments)
        self.tool_calls.append(
            ToolCall(id=call_id, function=FunctionCall(name=self._name, arguments=arguments))
        )

    def _content(self, text: str, events: list[ToolCallEvent]) -> None:
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        text = self._held_whitespace + text
        body = text.rstrip()
        self._held_whitespace = text[len(body) :]
        if body:
            self.content_parts.append(body)
            events.append(ContentDelta(body))


def parse_tool_calls(text: str, max_calls: int | None = None) -> tuple[str | None, list[ToolCall]]:
    """The whole output at once: (content, or None if there is none; the complete tool calls)."""
    parser = ToolCallParser(max_calls)
    parser.feed(text)
    parser.finish()
    return parser.content, parser.tool_calls


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that is a proper prefix of `marker`."""
    for length in range(min(len(text), len(marker) - 1), 0, -1):
        if marker.startswith(text[-length:]):
            return length
    return 0
