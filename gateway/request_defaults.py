"""Server-side defaults for what a request leaves out, reported back so nothing is hidden.

Agent clients (n8n's AI Agent, many framework wrappers) send neither max_tokens nor temperature, so a small
model would sample at 1.0 until the context window is full. For such requests:

    FLOWGATE_DEFAULT_MAX_TOKENS        max_tokens when the request gives none (default 1024; 0: the rest of
                                       the context window); never more than the context leaves
    FLOWGATE_TOOL_DEFAULT_TEMPERATURE  temperature when a request with tools gives none (default 0: greedy;
                                       "none": OpenAI's 1)
    FLOWGATE_MAX_PARALLEL_TOOL_CALLS   the most calls one answer may make (default 4); a request's own
                                       max_parallel_tool_calls may lower it, never raise it
    FLOWGATE_TOOL_DEFAULT_MAX_ITEMS    maxItems of tool-argument arrays that set none (default 32; 0: off)
    FLOWGATE_TOOL_DEFAULT_MAX_LENGTH   maxLength of tool-argument strings that set none (default 1024; 0: off)
    FLOWGATE_TOOL_REPEAT_PENALTY       for required and named calls, what tokens that continue a copy of an
                                       earlier array element lose from their logits (default 0: off)
                                       (these three: gateway.tools.guards; never for strict tools)

Explicit client values always win. The applied defaults come back in the `x-flowgate-defaults-applied`
response header, e.g. `max_tokens=1024, temperature=0.0`. `resolve()` is the one place these are decided,
so per-key or per-tier policies extend it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace

from gateway.tools.guards import DEFAULT_GUARDS, NO_GUARDS, ToolGuards

HEADER = "x-flowgate-defaults-applied"


@dataclass(frozen=True)
class RequestDefaults:
    max_tokens: int | None = 1024
    tool_temperature: float | None = 0.0
    max_parallel_tool_calls: int = 4
    tool_guards: ToolGuards = DEFAULT_GUARDS

    def __post_init__(self):
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ValueError("the default max_tokens must be at least 1")
        if self.tool_temperature is not None and not 0.0 <= self.tool_temperature <= 2.0:
            raise ValueError("the default tool temperature must be in [0, 2]")
        if self.max_parallel_tool_calls < 1:
            raise ValueError("max_parallel_tool_calls must be at least 1")
        if min(self.tool_guards.max_items, self.tool_guards.max_length, self.tool_guards.repeat_penalty) < 0:
            raise ValueError("tool guards (default bounds, repeat penalty) must be non-negative")

    @classmethod
    def from_env(cls) -> RequestDefaults:
        env, values = os.environ, {}
        if (raw := env.get("FLOWGATE_DEFAULT_MAX_TOKENS")) is not None:
            values["max_tokens"] = int(raw) or None
        if (raw := env.get("FLOWGATE_TOOL_DEFAULT_TEMPERATURE")) is not None:
            values["tool_temperature"] = None if raw.strip().lower() == "none" else float(raw)
        if (raw := env.get("FLOWGATE_MAX_PARALLEL_TOOL_CALLS")) is not None:
            values["max_parallel_tool_calls"] = int(raw)
        guards = DEFAULT_GUARDS
        if (raw := env.get("FLOWGATE_TOOL_DEFAULT_MAX_ITEMS")) is not None:
            guards = replace(guards, max_items=int(raw))
        if (raw := env.get("FLOWGATE_TOOL_DEFAULT_MAX_LENGTH")) is not None:
            guards = replace(guards, max_length=int(raw))
        if (raw := env.get("FLOWGATE_TOOL_REPEAT_PENALTY")) is not None:
            guards = replace(guards, repeat_penalty=float(raw))
        return cls(**values, tool_guards=guards)


@dataclass(frozen=True)
class Resolved:
    max_tokens: int | None
    temperature: float | None
    max_parallel_tool_calls: int
    applied: dict[str, object] = field(default_factory=dict)
    tool_guards: ToolGuards = NO_GUARDS

    def within_context(self, context_left: int) -> Resolved:
        """A defaulted max_tokens lowered to what the context window leaves after the prompt (a default
        never makes a request too long; no room at all is left to the engine's context-length error)."""
        if "max_tokens" not in self.applied or self.max_tokens <= context_left:
            return self
        applied = {k: v for k, v in self.applied.items() if k != "max_tokens" or context_left >= 1}
        if context_left >= 1:
            applied["max_tokens"] = context_left
        return replace(self, max_tokens=context_left if context_left >= 1 else None, applied=applied)

    @property
    def headers(self) -> dict[str, str]:
        return {HEADER: ", ".join(f"{k}={v}" for k, v in self.applied.items())} if self.applied else {}


def resolve(defaults: RequestDefaults, *, max_tokens: int | None, temperature: float | None, has_tools: bool,
            max_parallel_tool_calls: int | None) -> Resolved:
    """The request's values with the server's defaults filled in."""
    applied: dict[str, object] = {}
    if max_tokens is None and defaults.max_tokens is not None:
        max_tokens = applied["max_tokens"] = defaults.max_tokens
    if temperature is None and has_tools and defaults.tool_temperature is not None:
        temperature = applied["temperature"] = defaults.tool_temperature
    cap = defaults.max_parallel_tool_calls
    if max_parallel_tool_calls is not None:
        cap = min(cap, max_parallel_tool_calls)
    return Resolved(max_tokens=max_tokens, temperature=temperature, max_parallel_tool_calls=cap, applied=applied,
                    tool_guards=defaults.tool_guards)


def request_defaults(request) -> RequestDefaults:
    """The server's defaults (app state, set from the settings at startup; the plain defaults if unset)."""
    return getattr(request.app.state, "request_defaults", None) or RequestDefaults()
