"""The engine as one request's key sees it: tier -> priority and service tier, caps, cache salt, rate
limits, tier admission and the usage ledger, all applied in `generate()` so every endpoint gets them.

The `tiered` dependency hands generation routes a `TieredEngine`; the route calls `.bind(body)`, which
checks the model and resolves OpenAI's `service_tier` against the key's tier. Everything else of the
AsyncEngine (model_info, tokenizer, stats, ...) passes through.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from litestar import Request
from litestar.datastructures import State
from msgspec.structs import replace

from engine.client import AsyncEngine
from engine.errors import InvalidRequest
from engine.protocol import GenerateRequest, RequestOutput
from gateway.auth.identity import ANONYMOUS, SCOPE_KEY, TIER_PRIORITY, Identity
from gateway.auth.keys import KeyRecord, ToolChoiceDefault, effective_limits
from gateway.auth.middleware import RATELIMIT_KEY, RECORD_KEY, TIER_KEY
from gateway.auth.service import Tiers
from gateway.background import spawn
from gateway.errors import PermissionDenied

# OpenAI's service_tier -> ours, and ours -> the name echoed back (OpenAI's vocabulary, which its SDKs type).
SERVICE_TIERS = {"priority": "paid", "default": "free", "flex": "batch"}
ECHOED_TIER = {"paid": "priority", "free": "default", "batch": "flex"}


class TieredEngine:
    def __init__(self, engine: AsyncEngine, tiers: Tiers, record: KeyRecord | None, identity: Identity,
                 scope: dict, tier: str | None = None):
        self.engine = engine
        self.tiers = tiers
        self.record = record
        self.identity = identity
        self.scope = scope
        self.tier = tier or identity.tier
        self.limits = effective_limits(record, tiers.config.tiers, self.tier)
        self._admitted = False

    def __getattr__(self, name):
        return getattr(self.engine, name)

    @property
    def service_tier(self) -> str:
        """The tier this request runs under, as OpenAI names it (echoed in every response and chunk)."""
        return ECHOED_TIER[self.tier]

    @property
    def tool_choice_default(self) -> ToolChoiceDefault:
        own = self.record.tool_choice_default if self.record is not None else None
        return own or self.tiers.config.tool_choice_default

    def bind(self, body) -> TieredEngine:
        """Check the body's model against the key and its tier; resolve its service_tier, never above the
        key's own tier (asking for more gets the key's tier, as OpenAI does)."""
        allowed = self.record.models if self.record is not None and self.record.models is not None \
            else self.tiers.config.tiers[self.identity.tier].models
        if allowed is not None and body.model not in allowed:
            raise PermissionDenied(f"This key may not use the model `{body.model}`.", param="model")
        asked = SERVICE_TIERS.get(getattr(body, "service_tier", None) or "auto", self.identity.tier)
        tier = max(asked, self.identity.tier, key=TIER_PRIORITY.__getitem__)
        self.scope[TIER_KEY] = tier
        return TieredEngine(self.engine, self.tiers, self.record, self.identity, self.scope, tier)

    async def generate(self, request: GenerateRequest) -> AsyncIterator[RequestOutput]:
        request = self._policed(request)
        cost = self._cost(request)
        first = not self._admitted
        self._admitted = True
        ticket, headers = await self.tiers.limiter.admit(
            self.identity.key_id, self.limits, tokens=cost, count_request=first, take_concurrency=first)
        self.scope[RATELIMIT_KEY] = headers
        used = prompt = cached = completion = 0
        try:
            gate = self.tiers.gates[self.tier]
            started = await gate.acquire(self.identity.key_id, cost)
            try:
                async for out in self.engine.generate(request):
                    prompt, cached = out.num_prompt_tokens, out.num_cached_tokens
                    completion += sum(len(c.token_ids) for c in out.outputs)
                    yield out
            finally:
                used = prompt + completion
                gate.release(self.identity.key_id, cost, used, started)
        finally:
            spawn(self.tiers.limiter.release(ticket, used))
            spawn(self.tiers.ledger.record(self.identity.key_id, self.tier, requests=int(first and prompt > 0),
                                            prompt_tokens=prompt, cached_tokens=cached,
                                            completion_tokens=completion))

    def _policed(self, request: GenerateRequest) -> GenerateRequest:
        """Priority from the tier (the body may only lower it), the key's cache salt, the tier's caps."""
        params = request.params
        caps = self.limits
        if caps.n is not None and params.n > caps.n:
            raise InvalidRequest(f"n={params.n} is over this key's cap of {caps.n}", param="n")
        if caps.max_tokens is not None:
            if params.max_tokens is None:
                params = replace(params, max_tokens=caps.max_tokens)
            elif params.max_tokens > caps.max_tokens:
                raise InvalidRequest(f"max_tokens={params.max_tokens} is over this key's cap of "
                                     f"{caps.max_tokens}", param="max_tokens")
        return replace(request, params=params, priority=max(request.priority, TIER_PRIORITY[self.tier]),
                       cache_salt=self.record.cache_salt if self.record is not None else None)

    def _cost(self, request: GenerateRequest) -> int:
        """Tokens reserved up front: the prompt plus every choice's max_tokens (or the rest of the context)."""
        max_model_len = self.engine.model_info.max_model_len
        if request.prompt_token_ids is not None:
            num_prompt = len(request.prompt_token_ids)
        elif len(request.prompt or "") > 8 * max_model_len:  # the engine will refuse it; skip tokenizing
            num_prompt = max_model_len
        else:
            num_prompt = len(self.engine.tokenizer.encode(request.prompt or ""))
        max_new = request.params.max_tokens or max(max_model_len - num_prompt, 1)
        return num_prompt + max_new * request.params.n


def tiered_engine(state: State, request: Request) -> TieredEngine:
    return TieredEngine(state.engine, state.tiers, request.scope.get(RECORD_KEY),
                        request.scope.get(SCOPE_KEY, ANONYMOUS), request.scope)
