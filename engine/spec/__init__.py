"""Speculative decoding: cheap draft tokens, verified by the target model in one pass, output unchanged.

Each step, before scheduling, the `Speculator` gives every decoding sequence up to k draft tokens
(`Sequence.spec_token_ids`): prompt lookup (`ngram`) or a small draft model (`draft_model`), the grammar's
forced tokens first when the request is constrained, each draft cut where the grammar forbids a token.
The scheduler schedules 1 + k tokens; the runner lays them out as k + 1 decode rows and returns the logits
of every row. Verification (`Speculator.verify`) then walks the rows in order:

    row j predicts position L + j        (L: the sequence's length before the step)
    sample t_j from row j exactly as non-speculative decoding would at that position
    emit t_j; continue only if j < k and t_j == draft_j (its KV is then valid: num_computed_tokens += 1)

Drafts are deterministic (one-hot draft distribution q), so this is standard rejection sampling: accept
draft d with probability min(1, p(d) / q(d)) = p(d), else draw from norm(max(p - q, 0)), which is p with d
removed; sampling t ~ p and comparing does both at once. The output distribution is the target's; greedy
output is the same token for token; a seeded request consumes one draw per emitted token, as without
speculation. Rejected drafts' KV slots are simply never counted as computed, and blocks past the computed
tokens go back to the pool (`KVCacheManager.free_tail`).

`AdaptivePolicy` picks k per sequence and step from the batch size and the request's acceptance rate.
"""

from engine.spec.speculator import Speculator

__all__ = ["Speculator"]
