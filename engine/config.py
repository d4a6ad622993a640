"""Engine configuration: frozen, validated, torch-free (the gateway builds it from flags and env)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class EngineConfig:
    model: str = DEFAULT_MODEL  # an alias from the model cache, or a local Hugging Face directory
    served_model_name: str | None = None
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Weights: "auto" as the checkpoint stores them (AWQ int4 detected from its config); "none" the same;
    # "int8" per-channel int8 made at load; "int4" an AWQ checkpoint, or the bundled model's int4 variant.
    quantization: Literal["auto", "none", "int8", "int4", "awq"] = "auto"
    block_size: int = 16
    kv_cache_bytes: int | None = None  # an absolute KV budget; wins over kv_cache_fraction
    kv_cache_fraction: float = 0.25  # of free device memory (or of RAM on CPU)
    max_model_len: int | None = None  # defaults to the model's context window
    max_num_seqs: int = 64
    max_num_batched_tokens: int = 1024
    enable_prefix_caching: bool = True
    # Scheduler aging: a waiting request gains one priority level per this many seconds (0 disables);
    # see Sequence.sort_key for the bound it gives.
    priority_aging_s: float = 30.0
    # Abandon a running step between layers when a request arrives that outranks everything in it (paid over
    # free over batch): on CPU a step takes tens of milliseconds, which would otherwise sit in its TTFT.
    interruptible_steps: bool = True
    num_threads: int | None = None  # torch intra-op threads on CPU
    seed: int = 0
    # Speculative decoding (engine.spec): draft tokens verified in one target pass; output is unchanged.
    speculative: Literal["off", "ngram", "draft"] = "off"
    num_speculative_tokens: int = 8  # most draft tokens per sequence and step (the adaptive policy picks fewer)
    speculative_model: str | None = None  # draft: a local HF Llama-family dir sharing the target's tokenizer
    speculative_max_batch: int = 8  # no drafting while more sequences than this run
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.block_size <= 0 or self.block_size & (self.block_size - 1):
            raise ValueError("block_size must be a positive power of two")
        if not 0.0 < self.kv_cache_fraction <= 0.95:
            raise ValueError("kv_cache_fraction must be in (0, 0.95]")
        if self.quantization not in ("auto", "none", "int8", "int4", "awq"):
            raise ValueError("quantization must be one of auto, none, int8, int4, awq")
        if self.max_num_seqs < 1 or self.max_num_batched_tokens < 1:
            raise ValueError("max_num_seqs and max_num_batched_tokens must be at least 1")
        if self.priority_aging_s < 0:
            raise ValueError("priority_aging_s must be non-negative")
        if self.speculative not in ("off", "ngram", "draft"):
            raise ValueError("speculative must be off, ngram or draft")
        if self.num_speculative_tokens < 1 or self.speculative_max_batch < 1:
            raise ValueError("num_speculative_tokens and speculative_max_batch must be at least 1")
        if self.speculative == "draft" and not self.speculative_model:
            raise ValueError("speculative=draft needs speculative_model (a local model directory)")

    @classmethod
    def from_env(cls, **overrides) -> EngineConfig:
        """FLOWGATE_<FIELD> environment variables, then explicit overrides (None means unset)."""
        values = {}
        for name, f in cls.__dataclass_fields__.items():
            raw = os.environ.get(f"FLOWGATE_{name.upper()}")
            if raw is not None and name != "extra":
                values[name] = _parse(raw, f.type)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _parse(raw: str, annotation: str):
    if annotation.startswith("int"):
        return int(raw)
    if annotation.startswith("float"):
        return float(raw)
    if annotation == "bool":
        return raw.lower() in ("1", "true", "yes", "on")
    return raw
