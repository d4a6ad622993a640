"""Rejection sampling keeps the target's distribution: sampled tokens verified against fixed drafts follow
the exact probabilities that transformers computes for a tiny model (chi-square, fixed engine seed)."""

from __future__ import annotations

import math

import torch

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import SamplingParams
from engine.spec.policy import AdaptivePolicy
from tests.engine.test_engine_greedy import load_hf

PROMPT = [17, 250, 33, 98, 402, 7, 311]
TEMPERATURE = 5.0  # the random tiny model is very sure of itself; this spreads its choices
NUM_SAMPLES = 3000


class FixedDrafter:
    def __init__(self, drafts: list[int]):
        self.drafts = drafts

    def release_stale(self) -> None:
        pass

    def propose(self, seqs, ks):
        return [self.drafts[:k] for k in ks]


def next_token_probs(hf, contexts: list[list[int]]) -> torch.Tensor:
    with torch.no_grad():
        logits = hf(torch.tensor(contexts)).logits[:, -1].float()
    return torch.softmax(logits / TEMPERATURE, dim=-1)


def chi_square(counts: torch.Tensor, probs: torch.Tensor, n: int) -> tuple[float, float]:
    """Statistic and a p = 1e-5 critical value (Wilson-Hilferty), bins with expected count < 5 pooled."""
    expected = probs * n
    big = expected >= 5
    obs = torch.cat([counts[big], counts[~big].sum().view(1)])
    exp = torch.cat([expected[big], expected[~big].sum().view(1)])
    keep = exp > 0
    stat = float(((obs[keep] - exp[keep]) ** 2 / exp[keep]).sum())
    df = int(keep.sum()) - 1
    critical = df * (1 - 2 / (9 * df) + 4.27 * math.sqrt(2 / (9 * df))) ** 3
    return stat, critical


def test_verified_tokens_follow_the_target_distribution(tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    hf = load_hf(model_dir)
    vocab = hf.config.vocab_size
    p1 = next_token_probs(hf, [PROMPT])[0]
    p2 = next_token_probs(hf, [[*PROMPT, t] for t in range(vocab)])  # [t1, t2]
    marginal2 = p1 @ p2
    d0 = int(marginal2.argmax())
    p3 = next_token_probs(hf, [[*PROMPT, t, d0] for t in range(vocab)])  # [t1, t3] given t2 = d0
    joint3 = (p1 * p2[:, d0]) @ p3  # P(t2 = d0, t3 = y)
    d1 = int(joint3.argmax())

    engine = LLMEngine(EngineConfig(model=str(model_dir), dtype="float32", kv_cache_bytes=64 << 20,
                                    max_num_seqs=256, speculative="ngram", seed=1234))
    engine.eos_token_ids = set()
    engine.speculator.drafter = FixedDrafter([d0, d1])
    engine.speculator.policy = AdaptivePolicy(max_tokens=2, max_batch=10**6, min_gain=1e-12)
    params = SamplingParams(temperature=TEMPERATURE, max_tokens=4)
    outputs = engine.generate([PROMPT] * NUM_SAMPLES, params)
    samples = torch.tensor([o.outputs[0].token_ids for o in outputs])
    stats = engine.stats()
    assert stats.spec_draft_tokens >= 2 * NUM_SAMPLES * 0.99  # every sample drafted both tokens
    assert 0 < stats.spec_accepted_tokens < stats.spec_draft_tokens

    t2_counts = torch.bincount(samples[:, 1], minlength=vocab).float()
    stat, critical = chi_square(t2_counts, marginal2, NUM_SAMPLES)
    assert stat < critical, f"t2: chi-square {stat:.1f} >= {critical:.1f}"
    # The test can fail: t2 against the first token's distribution (a wrong row) is far off.
    assert chi_square(t2_counts, p1, NUM_SAMPLES)[0] > 3 * critical

    after_d0 = samples[samples[:, 1] == d0][:, 2]
    t3_counts = torch.bincount(after_d0, minlength=vocab).float()
    stat, critical = chi_square(t3_counts, joint3 / joint3.sum(), len(after_d0))
    assert len(after_d0) > 300 and stat < critical, f"t3 | t2 = d0: chi-square {stat:.1f} >= {critical:.1f}"
