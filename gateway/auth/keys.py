"""API keys: the record a key maps to, how secrets are minted and checked, and the tiers' default caps.

A key reads `fg_<key id>_<secret>`. Only HMAC-SHA256(pepper, key) is stored; the pepper lives outside the
store (FLOWGATE_KEY_PEPPER, or a 0600 file beside the keys), so a leaked store alone cannot be brute-forced.
The key id is public: it goes in logs, metrics, traces and job ownership.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import os
import re
import secrets
import time
from pathlib import Path
from typing import Literal

import msgspec

from gateway.auth.identity import Identity, Tier

KEY_PATTERN = re.compile(r"fg_([0-9a-f]{12})_([0-9a-f]{48})")
ToolChoiceDefault = Literal["auto", "required_first_turn"]


class Limits(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Per-key limits; None = the tier's default (and None there = unlimited)."""

    rpm: int | None = None  # requests per minute
    tpm: int | None = None  # tokens per minute: prompt + max_tokens reserved, corrected to actual usage
    max_concurrent: int | None = None  # requests (streams included) in flight at once
    max_tokens: int | None = None  # cap on a request's max_tokens (a 400 naming it, never a silent clamp)
    n: int | None = None  # cap on a request's n


class KeyRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    key_id: str
    tier: Tier
    key_hash: str  # hex HMAC-SHA256(pepper, key)
    name: str | None = None
    enabled: bool = True
    created_at: int = 0
    limits: Limits = msgspec.field(default_factory=Limits)
    models: list[str] | None = None  # None: every served model
    # Prefix-cache sharing: keys with the same tenant share cached prompts (system prompts); default: none.
    tenant: str | None = None
    tool_choice_default: ToolChoiceDefault | None = None  # None: the server's FLOWGATE_TOOL_CHOICE_DEFAULT
    callback_url: str | None = None  # webhook for this key's jobs and batches that name none themselves

    @property
    def identity(self) -> Identity:
        return Identity(key_id=self.key_id, tier=self.tier, name=self.name)

    @property
    def cache_salt(self) -> str:
        return f"tenant:{self.tenant}" if self.tenant else f"key:{self.key_id}"


class TierPolicy(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A tier's defaults for its keys' limits and the models it may use."""

    limits: Limits = msgspec.field(default_factory=Limits)
    models: list[str] | None = None


# Free keys get modest caps out of the box; FLOWGATE_TIERS (JSON, {"free": {"limits": {...}}, ...}) replaces
# a tier's entry wholesale.
DEFAULT_TIERS: dict[str, TierPolicy] = {
    "paid": TierPolicy(),
    "free": TierPolicy(limits=Limits(rpm=600, tpm=200_000, max_concurrent=8, max_tokens=1024, n=2)),
    "batch": TierPolicy(),
}


def load_tiers(raw: str | None) -> dict[str, TierPolicy]:
    tiers = dict(DEFAULT_TIERS)
    if raw:
        tiers |= msgspec.json.decode(raw, type=dict[Tier, TierPolicy])
    return tiers


def effective_limits(record: KeyRecord | None, tiers: dict[str, TierPolicy], tier: str) -> Limits:
    """The key's own limits, each unset one taken from its tier."""
    base = tiers[tier].limits
    own = record.limits if record is not None else Limits()
    return Limits(**{f: getattr(own, f) if getattr(own, f) is not None else getattr(base, f)
                     for f in Limits.__struct_fields__})


def mint(pepper: bytes, tier: Tier, **fields) -> tuple[str, KeyRecord]:
    """A new key: (the secret, shown once; the record to store)."""
    key_id = secrets.token_hex(6)
    key = f"fg_{key_id}_{secrets.token_hex(24)}"
    return key, KeyRecord(key_id=key_id, tier=tier, key_hash=hash_key(pepper, key), created_at=int(time.time()),
                          **fields)


def embedded_worker_key(pepper: bytes) -> tuple[str, KeyRecord]:
    """The batch-tier key of the worker `flowgate serve` runs beside itself: derived from the pepper, so every
    start (and `flowgate keys`) arrives at the same secret and the same one record, and nothing stores the secret."""
    derive = functools.partial(hmac.new, pepper, digestmod=hashlib.sha256)
    key_id = derive(b"flowgate-embedded-worker:id").hexdigest()[:12]
    key = f"fg_{key_id}_{derive(b'flowgate-embedded-worker:secret').hexdigest()[:48]}"
    return key, KeyRecord(key_id=key_id, tier="batch", key_hash=hash_key(pepper, key), created_at=int(time.time()),
                          name="embedded-worker")


def hash_key(pepper: bytes, key: str) -> str:
    return hmac.new(pepper, key.encode(), hashlib.sha256).hexdigest()


_DUMMY_HASH = "0" * 64


def verify(pepper: bytes, key: str, records: dict[str, KeyRecord]) -> KeyRecord | None:
    """The enabled record a presented key belongs to, or None. The digest is computed and compared in
    constant time whether or not the key id exists."""
    match = KEY_PATTERN.fullmatch(key)
    record = records.get(match[1]) if match else None
    ok = hmac.compare_digest(hash_key(pepper, key), record.key_hash if record else _DUMMY_HASH)
    return record if ok and record is not None and record.enabled else None


def load_pepper(path: Path) -> bytes:
    """FLOWGATE_KEY_PEPPER, else a random pepper kept (0600) at `path`; every replica must see the same one."""
    if env := os.environ.get("FLOWGATE_KEY_PEPPER"):
        return env.encode()
    try:
        return path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process created it first
            return path.read_bytes()
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_hex(32).encode())
        return path.read_bytes()
