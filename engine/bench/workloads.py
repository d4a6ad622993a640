"""Deterministic benchmark workloads: token-id prompts, output lengths and arrival times."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchRequest:
    prompt: list[int]
    output_len: int
    arrival_s: float  # offset from the start of the run


@dataclass(frozen=True)
class Workload:
    name: str
    requests: list[BenchRequest]

    @property
    def num_output_tokens(self) -> int:
        return sum(r.output_len for r in self.requests)


def _tokens(rng: random.Random, n: int, vocab: int) -> list[int]:
    # Skip the low ids: in our tokenizers those are special and control tokens.
    return [rng.randrange(100, vocab) for _ in range(n)]


def mixed(vocab: int, num_requests: int = 64, rate: float | None = None, seed: int = 0) -> Workload:
    """Prompts of 50-500 tokens, outputs of 16-256; all at once, or a Poisson stream at `rate` req/s."""
    rng = random.Random(seed)
    t = 0.0
    requests = []
    for _ in range(num_requests):
        requests.append(BenchRequest(_tokens(rng, rng.randint(50, 500), vocab), rng.randint(16, 256), t))
        if rate:
            t += rng.expovariate(rate)
    return Workload("mixed" if rate is None else f"mixed-poisson-{rate:g}", requests)


def shared_prefix(vocab: int, num_requests: int = 32, prefix_len: int = 2000, seed: int = 0) -> Workload:
    """A ~2,000-token common system+tools prefix, then a short question each."""
    rng = random.Random(seed)
    prefix = _tokens(rng, prefix_len, vocab)
    requests = [BenchRequest(prefix + _tokens(rng, rng.randint(10, 40), vocab), 16, 0.0) for _ in range(num_requests)]
    return Workload("shared-prefix", requests)
