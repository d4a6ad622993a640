"""Propose draft tokens before a step; verify them against the target's logits after it (see engine.spec)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from engine.config import EngineConfig
from engine.kv_cache_manager import KVCacheManager
from engine.sampler import Sampler, SamplerOutput
from engine.sequence import Sequence
from engine.spec.policy import AdaptivePolicy, SpecState

# The engine's per-token append (output, logprobs, grammar, stop checks); False once the sequence finished.
Emit = Callable[[Sequence, SamplerOutput, int, int], bool]


class NgramDrafter:
    def release_stale(self) -> None:
        pass  # its state lives on the sequences

    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[list[int]]:
        return [seq.spec.ngram.propose(seq.token_ids, k) for seq, k in zip(seqs, ks, strict=True)]


class Speculator:
    def __init__(self, config: EngineConfig, sampler: Sampler, kv: KVCacheManager, drafter):
        self.policy = AdaptivePolicy(config.num_speculative_tokens, config.speculative_max_batch)
        self.sampler = sampler
        self.kv = kv
        self.drafter = drafter
        self.num_draft_tokens = 0
        self.num_accepted_tokens = 0

    @classmethod
    def build(cls, config: EngineConfig, model_dir, runner, sampler: Sampler, kv: KVCacheManager) -> Speculator:
        if config.speculative == "draft":
            from engine.spec.draft_model import DraftModelDrafter

            return cls(config, sampler, kv, DraftModelDrafter(config, model_dir, runner))
        return cls(config, sampler, kv, NgramDrafter())

    def stats(self, running: list[Sequence]) -> dict:
        by_request: dict[str, float] = {}
        for seq in running:
            if seq.spec is not None and seq.spec.num_draft_tokens:
                by_request[seq.request_id] = seq.spec.acceptance_rate  # n > 1: the last completion's
        return {
            "spec_draft_tokens": self.num_draft_tokens,
            "spec_accepted_tokens": self.num_accepted_tokens,
            "spec_acceptance_by_request": by_request,
        }

    def propose(self, running: list[Sequence]) -> None:
        """Set each running sequence's draft tokens for the coming step (none for most under load)."""
        self.drafter.release_stale()
        batch_size = len(running)
        wanted: list[tuple[Sequence, int]] = []
        for seq in running:
            seq.spec_token_ids = []
            if seq.num_tokens - seq.num_computed_tokens != 1:
                continue  # still prefilling (or recomputing after preemption)
            if seq.spec is None:
                seq.spec = SpecState()
            k = self.policy.num_draft_tokens(batch_size, seq.spec.acceptance)
            if k == 0:
                seq.spec.decay()
            # Every draft accepted still leaves one more token (the bonus) for this step: never past max_tokens.
            k = min(k, seq.max_tokens - seq.num_output_tokens - 1)
            if k > 0:
                wanted.append((seq, k))
        if not wanted:
            return
        drafts = self.drafter.propose([s for s, _ in wanted], [k for _, k in wanted])
        for (seq, k), draft in zip(wanted, drafts, strict=True):
            seq.spec_token_ids = _grammar_checked(seq, draft, k)

    def verify(self, logits: torch.Tensor, seqs: list[Sequence], emit: Emit) -> int:
        """Sample every sequence's tokens from its rows of logits (one row, or 1 + k with drafts) and emit
        them; returns how many tokens were emitted."""
        plain, drafted, row = [], [], 0
        for seq in seqs:
            (drafted if seq.spec_token_ids else plain).append((seq, row))
            row += 1 + len(seq.spec_token_ids)
        if plain:
            plain_seqs = [s for s, _ in plain]
            rows = logits if len(plain) == row else logits[[r for _, r in plain]]
            sampled = self.sampler(rows, plain_seqs)
            for i, seq in enumerate(plain_seqs):
                emit(seq, sampled, i, sampled.token_ids[i])
        num_emitted = len(plain)
        for seq, start in drafted:
            num_emitted += self._verify_drafts(seq, logits[start : start + 1 + len(seq.spec_token_ids)], emit)
        return num_emitted

    def _verify_drafts(self, seq: Sequence, rows: torch.Tensor, emit: Emit) -> int:
        drafts, seq.spec_token_ids = seq.spec_token_ids, []
        num_accepted = 0
        for j in range(len(drafts) + 1):
            # One row at a time: grammar masks and penalties see every token accepted before this one.
            sampled = self.sampler(rows[j : j + 1], [seq])
            token = sampled.token_ids[0]
            alive = emit(seq, sampled, 0, token)
            if j == len(drafts) or token != drafts[j]:
                break
            num_accepted += 1
            if not alive:
                break
            seq.num_computed_tokens += 1  # the draft's KV was computed from this very token
        seq.spec.record(len(drafts), num_accepted)
        self.num_draft_tokens += len(drafts)
        self.num_accepted_tokens += num_accepted
        if not seq.is_finished:
            self.kv.free_tail(seq)
        return j + 1


def _grammar_checked(seq: Sequence, draft: list[int], k: int) -> list[int]:
    """A constrained request drafts the grammar's forced tokens first (a tool call's fixed keys) and stops
    its draft at the first token a logits processor rules out."""
    for processor in seq.logits_processors:
        forced = processor.forced_tokens()
        if forced:
            draft = forced
        draft = draft[: processor.num_allowed(draft[:k])]
    return draft[:k]
