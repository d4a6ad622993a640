"""Turn one row of logits per sampling sequence into the next token (and its logprobs).

Order, as in vLLM: logits processors (grammar) -> logit_bias -> penalties -> greedy, or
temperature -> top-k -> top-p -> min-p -> a draw. Logprobs report the model's raw distribution.
A seeded sequence draws from its own generator, one draw per step, so its output does not depend on
what else is in the batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.sequence import Sequence


@dataclass(slots=True)
class SamplerOutput:
    token_ids: list[int]
    logprobs: torch.Tensor | None  # [N] logprob of each chosen token
    top_ids: torch.Tensor | None  # [N, k]
    top_logprobs: torch.Tensor | None  # [N, k]


class Sampler:
    def __init__(self, vocab_size: int, seed: int = 0):
        self.vocab_size = vocab_size
        self.generator = torch.Generator().manual_seed(seed)

    @torch.inference_mode()
    def __call__(self, logits: torch.Tensor, seqs: list[Sequence]) -> SamplerOutput:
        logits = logits[:, : self.vocab_size].float()
        raw_logprobs = self._raw_logprobs(logits, seqs)
        logits = logits.clone() if raw_logprobs is not None else logits
        self._apply_processors(logits, seqs)
        self._apply_logit_bias(logits, seqs)
        self._apply_penalties(logits, seqs)
        token_ids = self._choose(logits, seqs)
        return self._with_logprobs(token_ids, raw_logprobs, seqs)

    def _raw_logprobs(self, logits, seqs) -> torch.Tensor | None:
        if all(s.params.logprobs is None for s in seqs):
            return None
        return torch.log_softmax(logits, dim=-1)

    def _apply_processors(self, logits, seqs) -> None:
        for i, seq in enumerate(seqs):
            for processor in seq.logits_processors:
                processor.apply(logits[i])

    def _apply_logit_bias(self, logits, seqs) -> None:
        for i, seq in enumerate(seqs):
            if seq.params.logit_bias:
                ids = torch.tensor([t for t in seq.params.logit_bias if 0 <= t < self.vocab_size])
                if ids.numel():
                    bias = torch.tensor([seq.params.logit_bias[t] for t in ids.tolist()])
                    logits[i].index_add_(0, ids, bias)

    def _apply_penalties(self, logits, seqs) -> None:
        for i, seq in enumerate(seqs):
            if not _has_penalty(seq):
                continue
            p, row = seq.params, logits[i]
            if p.repetition_penalty != 1.0:
                seen = torch.tensor(sorted(set(seq.token_ids)), dtype=torch.long)
                vals = row[seen]
                row[seen] = torch.where(vals > 0, vals / p.repetition_penalty, vals * p.repetition_penalty)
            if (p.presence_penalty or p.frequency_penalty) and seq.num_output_tokens:
                counts = torch.bincount(torch.tensor(seq.output_token_ids), minlength=self.vocab_size)
                counts = counts[: self.vocab_size].to(row.dtype)
                row -= p.frequency_penalty * counts + p.presence_penalty * (counts > 0).to(row.dtype)

    def _choose(self, logits, seqs) -> torch.Tensor:
        token_ids = _argmax(logits)
        rows = [i for i, s in enumerate(seqs) if not s.params.greedy]
        if rows:
            probs = _filtered_probs(logits[rows], [seqs[i].params for i in rows])
            token_ids[rows] = self._draw(probs, [seqs[i] for i in rows])
        return token_ids

    def _draw(self, probs: torch.Tensor, seqs: list[Sequence]) -> torch.Tensor:
        """Exponential race (argmax p/E, E ~ Exp(1)): a categorical draw with one noise row per sequence."""
        noise = torch.empty_like(probs)
        unseeded = [i for i, s in enumerate(seqs) if s.generator is None]
        if unseeded:
            noise[unseeded] = torch.empty(len(unseeded), probs.shape[1]).exponential_(generator=self.generator)
        for i, seq in enumerate(seqs):
            if seq.generator is not None:
                noise[i].exponential_(generator=seq.generator)
        return _argmax(probs / noise)

    def _with_logprobs(self, token_ids, raw_logprobs, seqs) -> SamplerOutput:
        ids = token_ids.tolist()
        if raw_logprobs is None:
            return SamplerOutput(ids, None, None, None)
        chosen = raw_logprobs.gather(1, token_ids.unsqueeze(1)).squeeze(1)
        k = max(s.params.logprobs or 0 for s in seqs)
        top_logprobs, top_ids = raw_logprobs.topk(k, dim=-1) if k else (None, None)
        return SamplerOutput(ids, chosen, top_ids, top_logprobs)


def _argmax(x: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax, first index on ties. On CPU, max(dim).indices is ~6x faster than argmax for a batch
    of vocabulary rows."""
    return x.max(dim=-1).indices


def _has_penalty(seq: Sequence) -> bool:
    p = seq.params
    return p.repetition_penalty != 1.0 or p.presence_penalty != 0.0 or p.frequency_penalty != 0.0


def _filtered_probs(logits: torch.Tensor, params: list) -> torch.Tensor:
    temperature = torch.tensor([p.temperature for p in params]).unsqueeze(1)
    logits = logits / temperature
    if any(p.top_k for p in params):
        top_k = torch.tensor([p.top_k or logits.shape[1] for p in params]).unsqueeze(1)
        kth = logits.sort(dim=-1, descending=True).values.gather(1, (top_k - 1).clamp(max=logits.shape[1] - 1))
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if any(p.top_p < 1.0 for p in params):
        top_p = torch.tensor([p.top_p for p in params]).unsqueeze(1)
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest set whose mass reaches top_p: drop a token if the mass before it already does.
        drop = (sorted_probs.cumsum(dim=-1) - sorted_probs) >= top_p
        probs = probs.scatter(1, order, sorted_probs.masked_fill(drop, 0.0))
    if any(p.min_p > 0.0 for p in params):
        min_p = torch.tensor([p.min_p for p in params]).unsqueeze(1)
        probs = probs.masked_fill(probs < min_p * probs.max(dim=-1, keepdim=True).values, 0.0)
    return probs
