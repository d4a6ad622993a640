"""Auth, limits and admission settings, all from FLOWGATE_* environment variables.

| variable                         | default                      | meaning                                      |
|----------------------------------|------------------------------|----------------------------------------------|
| FLOWGATE_REDIS_URL               | unset (file + memory)        | keys, limits and usage shared by replicas    |
| FLOWGATE_REDIS_PREFIX            | flowgate:                    | namespace of every Redis key we write        |
| FLOWGATE_KEYS_FILE               | $FLOWGATE_HOME/keys.json     | the key store without Redis                  |
| FLOWGATE_KEY_PEPPER              | a 0600 file beside the keys  | HMAC pepper; the same on every replica       |
| FLOWGATE_ADMIN_KEY               | unset (admin routes refuse)  | bearer secret for /admin/*                   |
| FLOWGATE_TIERS                   | see keys.DEFAULT_TIERS       | JSON: per-tier default limits and models     |
| FLOWGATE_TOOL_CHOICE_DEFAULT     | auto                         | auto or required_first_turn (n8n agents)     |
| FLOWGATE_ADMIT_<TIER>_INFLIGHT   | paid 64, free 8, batch 4     | engine requests a tier may have in flight    |
| FLOWGATE_ADMIT_<TIER>_QUEUE      | paid 256, free 32, batch 256 | requests a tier may queue before 429s        |
| FLOWGATE_ADMIT_QUEUE_TIMEOUT_S   | 30                           | longest wait in the queue before a 429       |
| FLOWGATE_ADMIT_MAX_WAIT_S        | 10                           | projected queue wait that gets an instant 429 |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gateway.auth.keys import TierPolicy, ToolChoiceDefault, load_tiers

KEY_REFRESH_S = 0.5  # a revoked key stops working on every replica within this (plus one request)


def flowgate_home() -> Path:
    return Path(os.environ.get("FLOWGATE_HOME") or "~/.cache/flowgate").expanduser()


@dataclass(frozen=True)
class TierAdmission:
    inflight: int
    queue: int


@dataclass(frozen=True)
class AuthConfig:
    redis_url: str | None = None
    redis_prefix: str = "flowgate:"
    keys_file: Path = field(default_factory=lambda: flowgate_home() / "keys.json")
    admin_key: str | None = None
    tiers: dict[str, TierPolicy] = field(default_factory=lambda: load_tiers(None))
    tool_choice_default: ToolChoiceDefault = "auto"
    admission: dict[str, TierAdmission] = field(default_factory=lambda: dict(DEFAULT_ADMISSION))
    queue_timeout_s: float = 30.0
    max_wait_s: float = 10.0  # refuse at once rather than queue a request that would wait longer

    def __post_init__(self):
        if self.tool_choice_default not in ("auto", "required_first_turn"):
            raise ValueError("FLOWGATE_TOOL_CHOICE_DEFAULT must be auto or required_first_turn")

    @property
    def pepper_file(self) -> Path:
        return self.keys_file.with_name("key_pepper")

    @classmethod
    def from_env(cls) -> AuthConfig:
        env = os.environ
        admission = {
            tier: TierAdmission(
                inflight=int(env.get(f"FLOWGATE_ADMIT_{tier.upper()}_INFLIGHT", default.inflight)),
                queue=int(env.get(f"FLOWGATE_ADMIT_{tier.upper()}_QUEUE", default.queue)),
            )
            for tier, default in DEFAULT_ADMISSION.items()
        }
        values = {
            # The embedded Redis `flowgate serve` starts is the private job store of one process: keys stay in
            # the file, where `flowgate keys` finds them.
            "redis_url": None if env.get("FLOWGATE_BULK_EMBEDDED") == "1" else env.get("FLOWGATE_REDIS_URL") or None,
            "redis_prefix": env.get("FLOWGATE_REDIS_PREFIX"),
            "keys_file": Path(env["FLOWGATE_KEYS_FILE"]) if env.get("FLOWGATE_KEYS_FILE") else None,
            "admin_key": env.get("FLOWGATE_ADMIN_KEY") or None,
            "tiers": load_tiers(env.get("FLOWGATE_TIERS")),
            "tool_choice_default": env.get("FLOWGATE_TOOL_CHOICE_DEFAULT"),
            "admission": admission,
            "queue_timeout_s": float(env["FLOWGATE_ADMIT_QUEUE_TIMEOUT_S"])
            if env.get("FLOWGATE_ADMIT_QUEUE_TIMEOUT_S") else None,
            "max_wait_s": float(env["FLOWGATE_ADMIT_MAX_WAIT_S"]) if env.get("FLOWGATE_ADMIT_MAX_WAIT_S") else None,
        }
        return cls(**{k: v for k, v in values.items() if v is not None})


DEFAULT_ADMISSION = {
    "paid": TierAdmission(inflight=64, queue=256),
    "free": TierAdmission(inflight=8, queue=32),
    "batch": TierAdmission(inflight=4, queue=256),
}
