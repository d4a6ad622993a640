"""Drafting with a small model that shares the target's tokenizer, in its own paged KV cache.

Each drafted sequence has a shadow `Sequence` in the draft model's cache. Before drafting, the shadow takes
the target's tokens; its computed prefix shrinks to what still matches (the drafts the target accepted),
the rejected tail's blocks go back, and the draft model catches up in one pass (a prefill the first time,
usually one or two tokens after), then decodes k - 1 more tokens greedily. Greedy drafts are one-hot, which
keeps verification exact (see engine.spec).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from engine import assets
from engine.config import EngineConfig
from engine.kv_cache_manager import KVCacheManager
from engine.model_runner import ModelRunner
from engine.models.config import ModelConfig
from engine.sequence import Sequence, SequenceStatus

DRAFT_KV_FRACTION = 0.5  # of the target's KV tokens: drafts run ahead of few sequences at a time


@dataclasses.dataclass(slots=True)
class _Shadow:
    target: Sequence
    seq: Sequence  # its copy in the draft model's cache
    synced_len: int  # the target's length when it last drafted
    drafts: list[int]


class DraftModelDrafter:
    def __init__(self, config: EngineConfig, target_dir: Path, target_runner: ModelRunner):
        model_dir = Path(assets.resolve(config.speculative_model))
        draft_config = ModelConfig.from_pretrained(model_dir)
        if _tokenizer_vocab(model_dir) != _tokenizer_vocab(target_dir):
            raise ValueError(f"draft model {model_dir} does not share the target's tokenizer")
        num_tokens = int(DRAFT_KV_FRACTION * target_runner.num_blocks * config.block_size)
        elem = torch.empty((), dtype=target_runner.dtype).element_size()
        kv_bytes = 2 * draft_config.num_hidden_layers * num_tokens * draft_config.num_key_value_heads
        kv_bytes *= draft_config.head_dim * elem
        self.runner = ModelRunner(
            dataclasses.replace(config, model=str(model_dir), kv_cache_bytes=kv_bytes, speculative="off"), model_dir
        )
        self.kv = KVCacheManager(self.runner.num_blocks, config.block_size, enable_caching=False)
        self.vocab_size = min(draft_config.vocab_size, target_runner.model_config.vocab_size)
        self._shadows: dict[int, _Shadow] = {}

    def propose(self, seqs: list[Sequence], ks: list[int]) -> list[list[int]]:
        todo = {}
        for seq, k in zip(seqs, ks, strict=True):
            shadow = self._sync(seq)
            num_new = shadow.seq.num_tokens - shadow.seq.num_computed_tokens
            if self.kv.allocate_slots(shadow.seq, num_new + k - 1):
                todo[seq.seq_id] = (shadow, k, num_new)
            else:  # no room in the draft cache now: no draft, and start over later
                self._drop(seq.seq_id)
        scheduled = {shadow.seq: num_new for shadow, _, num_new in todo.values()}
        while scheduled:
            logits, ran = self.runner.execute(scheduled)
            tokens = logits[:, : self.vocab_size].max(dim=-1).indices.tolist()
            for shadow_seq, num in scheduled.items():
                shadow_seq.num_computed_tokens += num
            scheduled = {}
            for shadow_seq, token in zip(ran, tokens, strict=True):
                shadow_seq.token_ids.append(token)
                shadow, k, _ = todo[shadow_seq.seq_id]
                if len(shadow_seq.token_ids) - shadow.synced_len < k:
                    scheduled[shadow_seq] = 1
        drafts = []
        for seq in seqs:
            shadow = self._shadows.get(seq.seq_id)
            shadow_drafts = shadow.seq.token_ids[shadow.synced_len :] if seq.seq_id in todo else []
            if shadow is not None:
                shadow.drafts = shadow_drafts
            drafts.append(shadow_drafts)
        return drafts

    def _sync(self, seq: Sequence) -> _Shadow:
        shadow = self._shadows.get(seq.seq_id)
        if shadow is None:
            shadow_seq = Sequence(seq.seq_id, seq.request_id, seq.index, [], 0, seq.params, seq.max_tokens)
            shadow_seq.status = SequenceStatus.RUNNING
            shadow = self._shadows[seq.seq_id] = _Shadow(seq, shadow_seq, 0, [])
        matched = shadow.synced_len
        for draft, token in zip(shadow.drafts, seq.token_ids[matched:], strict=False):
            if draft != token:
                break
            matched += 1
        shadow.seq.token_ids = list(seq.token_ids)
        shadow.seq.num_computed_tokens = min(shadow.seq.num_computed_tokens, matched)
        self.kv.free_tail(shadow.seq)
        shadow.synced_len = seq.num_tokens
        return shadow

    def release_stale(self) -> None:
        """Forget sequences that finished or were preempted (their target restarts from scratch)."""
        for seq_id in [i for i, s in self._shadows.items() if s.target.status is not SequenceStatus.RUNNING]:
            self._drop(seq_id)

    def _drop(self, seq_id: int) -> None:
        shadow = self._shadows.pop(seq_id)
        self.kv.free(shadow.seq)


def _tokenizer_vocab(model_dir: Path) -> dict:
    return json.loads((Path(model_dir) / "tokenizer.json").read_text())["model"]["vocab"]
