"""The per-sequence logits-processor hook: grammar-constrained decoding plugs in here."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch


class LogitsProcessor(ABC):
    """Stateful, one per sequence; lives in the engine process.

    Each step the engine calls `apply` on the sequence's row of logits before sampling, then `accept`
    with the sampled token. Once `is_terminated()` is true the sequence finishes with reason "stop".
    """

    @abstractmethod
    def apply(self, logits: torch.Tensor) -> None:
        """Adjust one row of float32 logits [vocab_size] in place (e.g. set disallowed tokens to -inf)."""

    @abstractmethod
    def accept(self, token_id: int) -> None: ...

    def is_terminated(self) -> bool:
        return False

    def forced_tokens(self) -> list[int]:
        """Tokens that must come next whatever the model says (speculative decoding drafts them)."""
        return []

    def num_allowed(self, draft: list[int]) -> int:
        """How many leading tokens of a draft could be accepted in turn from the current state (which is
        left unchanged); a speculative draft is cut there."""
        return len(draft)
