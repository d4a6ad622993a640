"""Owns the model and its paged KV cache; turns a scheduled batch into logits for the sampler."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from engine.attention import AttentionMetadata
from engine.config import EngineConfig
from engine.cpu_threads import available_cpus
from engine.models.loader import load_model
from engine.quant.serving import prepare_linears, serving_dtype, weights_dir
from engine.sequence import Sequence

log = logging.getLogger(__name__)


class StepInterrupted(Exception):
    """Raised between decoder layers when the step's `interrupt` check says a more important request arrived."""

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(slots=True)
class ModelInput:
    input_ids: torch.Tensor
    positions: torch.Tensor
    meta: AttentionMetadata
    sample_indices: torch.Tensor  # rows of the step's tokens whose logits are sampled
    sample_seqs: list[Sequence]


class ModelRunner:
    def __init__(self, config: EngineConfig, model_dir: Path):
        self.device = _resolve_device(config.device)
        weights = weights_dir(config, model_dir)
        self.dtype = _resolve_dtype(serving_dtype(config, weights, self.device), self.device)
        if self.device.type == "cpu":
            torch.set_num_threads(config.num_threads or available_cpus())
        self.model, self.model_config = load_model(weights, self.dtype, self.device)
        prepare_linears(self.model, config, self.device, self.dtype)
        self.block_size = config.block_size
        self.num_blocks = self._count_kv_blocks(config)
        shape = (self.num_blocks, self.block_size, self.model_config.num_key_value_heads, self.model_config.head_dim)
        # Zeroed, not empty: masked-out slots still meet the softmax weights, and 0 * NaN would poison them.
        self.kv_caches = [
            (torch.zeros(shape, dtype=self.dtype, device=self.device),
             torch.zeros(shape, dtype=self.dtype, device=self.device))
            for _ in range(self.model_config.num_hidden_layers)
        ]
        log.info("KV cache: %d blocks of %d tokens on %s", self.num_blocks, self.block_size, self.device)
        self._interrupt: Callable[[], bool] | None = None
        for layer in self.model.model.layers:
            layer.register_forward_pre_hook(self._between_layers)

    @property
    def kv_bytes_per_block(self) -> int:
        mc = self.model_config
        elem = torch.empty((), dtype=self.dtype).element_size()
        return 2 * mc.num_hidden_layers * self.block_size * mc.num_key_value_heads * mc.head_dim * elem

    def _count_kv_blocks(self, config: EngineConfig) -> int:
        budget = config.kv_cache_bytes or int(config.kv_cache_fraction * _available_memory(self.device))
        num_blocks = budget // self.kv_bytes_per_block
        if num_blocks < 2:
            raise ValueError(f"KV budget of {budget} bytes holds fewer than 2 blocks")
        return num_blocks

    @torch.inference_mode()
    def execute(self, scheduled: dict[Sequence, int], interrupt: Callable[[], bool] | None = None
                ) -> tuple[torch.Tensor, list[Sequence]]:
        """Run one step; returns float32 logits [num_rows, vocab] and the sequences they belong to: one row
        each, or 1 + len(spec_token_ids) consecutive rows for a sequence with draft tokens.

        `interrupt` is asked before each decoder layer; True abandons the step (StepInterrupted). The layers
        already run wrote KV only into the step's own slots, for tokens not yet counted as computed, so the
        step can simply be scheduled again."""
        inputs = self._prepare(scheduled)
        self._interrupt = interrupt
        try:
            hidden = self.model(inputs.input_ids, inputs.positions, self.kv_caches, inputs.meta)
        finally:
            self._interrupt = None
        logits = self.model.compute_logits(hidden[inputs.sample_indices])
        return logits, inputs.sample_seqs

    def _between_layers(self, _module, _args) -> None:
        if self._interrupt is not None and self._interrupt():
            raise StepInterrupted

    def _prepare(self, scheduled: dict[Sequence, int]) -> ModelInput:
        """Decode rows first (see engine.attention), then prefill chunks.

        A decoding sequence with draft tokens contributes one decode row per token (its last token, then
        each draft), each attending to the cache up to its own position: the same kernel and numbers as
        decoding those tokens one step at a time. Every row of such a sequence is sampled.
        """
        decodes = [s for s, n in scheduled.items() if n == 1 + len(s.spec_token_ids)]
        prefills = [(s, n) for s, n in scheduled.items() if n != 1 + len(s.spec_token_ids)]
        input_ids, positions, slots, sample_indices, sample_seqs = [], [], [], [], []
        decode_rows, decode_lens = [], []
        bs = self.block_size
        for seq in decodes:
            start = seq.num_computed_tokens
            caught_up = start + 1 == seq.num_tokens  # else a one-token prefill chunk: nothing to sample
            for pos, token in enumerate([seq.token_ids[start], *seq.spec_token_ids], start):
                input_ids.append(token)
                positions.append(pos)
                slots.append(seq.block_table[pos // bs] * bs + pos % bs)
                decode_rows.append(seq)
                decode_lens.append(pos + 1)
                if caught_up:
                    sample_indices.append(len(input_ids) - 1)
            if caught_up:
                sample_seqs.append(seq)
        for seq, n in prefills:
            start = seq.num_computed_tokens
            input_ids.extend(seq.token_ids[start : start + n])
            positions.extend(range(start, start + n))
            table = seq.block_table
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            if start + n == seq.num_tokens:
                sample_indices.append(len(input_ids) - 1)
                sample_seqs.append(seq)
        meta = AttentionMetadata(
            slot_mapping=self._tensor(slots, torch.long),
            num_decode_tokens=len(decode_rows),
            decode_block_tables=self._block_tables(decode_rows),
            decode_context_lens=self._tensor(decode_lens, torch.int32),
            prefill_block_tables=self._block_tables([s for s, _ in prefills]),
            prefill_query_start_loc=self._tensor(list(itertools.accumulate((n for _, n in prefills), initial=0)), torch.int32),
            prefill_context_lens=self._tensor([s.num_computed_tokens + n for s, n in prefills], torch.int32),
            max_prefill_query_len=max((n for _, n in prefills), default=0),
        )
        return ModelInput(
            input_ids=self._tensor(input_ids, torch.long),
            positions=self._tensor(positions, torch.long),
            meta=meta,
            sample_indices=self._tensor(sample_indices, torch.long),
            sample_seqs=sample_seqs,
        )

    def _block_tables(self, seqs: list[Sequence]) -> torch.Tensor:
        width = max((len(s.block_table) for s in seqs), default=0)
        return self._tensor([s.block_table + [0] * (width - len(s.block_table)) for s in seqs], torch.int32)

    def _tensor(self, data, dtype) -> torch.Tensor:
        return torch.tensor(data, dtype=dtype, device=self.device)


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def _resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """auto: bfloat16 on CUDA; on CPU what this CPU measures faster (engine/cpu_dtype.py): bf16 with AMX,
    float32 where bf16 matmuls are not clearly faster (AVX512-BF16 alone, e.g. AMD Zen 4)."""
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        from engine.cpu_dtype import cpu_auto_dtype

        return cpu_auto_dtype()
    return _DTYPES[name]


def _available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    with open("/proc/meminfo") as f:
        info = dict(line.split(":", 1) for line in f)
    return int(info["MemAvailable"].split()[0]) * 1024
