"""The Llama-family hyperparameters, parsed from a Hugging Face config.json (transformers 4.x or 5.x layout)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# architectures[0] -> (model_type, whether q/k/v carry a bias regardless of `attention_bias`)
_ARCHITECTURES = {
    "LlamaForCausalLM": ("llama", False),
    "MistralForCausalLM": ("mistral", False),
    "Qwen2ForCausalLM": ("qwen2", True),
}
_ROPE_TYPES = {"llama3", "linear"}


@dataclass(frozen=True)
class ModelConfig:
    """Sliding-window attention (Mistral, Qwen2) is not applied: every layer attends to the full context.

    That is exact for sequences shorter than the window, which `max_model_len` must then respect.
    """

    architecture: str
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: dict | None  # {"rope_type": "llama3" | "linear", ...} or None for plain rope
    max_position_embeddings: int
    tie_word_embeddings: bool
    qkv_bias: bool
    o_proj_bias: bool
    mlp_bias: bool
    sliding_window: int | None
    torch_dtype: str | None  # the checkpoint's dtype name, e.g. "bfloat16"
    quantization_config: dict | None  # kept verbatim for the quantized linear layers

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")
        if self.head_dim % 2:
            raise ValueError("head_dim must be even for rotary embeddings")
        if self.rope_scaling is not None and self.rope_scaling["rope_type"] not in _ROPE_TYPES:
            raise ValueError(f"unsupported rope scaling {self.rope_scaling['rope_type']!r}")

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim

    @classmethod
    def from_pretrained(cls, path: str | Path) -> ModelConfig:
        return cls.from_dict(json.loads((Path(path) / "config.json").read_text(encoding="utf-8")))

    @classmethod
    def from_dict(cls, cfg: dict) -> ModelConfig:
        architecture = _architecture(cfg)
        _, always_qkv_bias = _ARCHITECTURES[architecture]
        if cfg.get("hidden_act", "silu") != "silu":
            raise ValueError(f"unsupported hidden_act {cfg['hidden_act']!r}")
        heads = cfg["num_attention_heads"]
        attention_bias = bool(cfg.get("attention_bias", False))
        rope_theta, rope_scaling = _rope(cfg)
        return cls(
            architecture=architecture,
            hidden_size=cfg["hidden_size"],
            num_hidden_layers=cfg["num_hidden_layers"],
            num_attention_heads=heads,
            num_key_value_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
            intermediate_size=cfg["intermediate_size"],
            vocab_size=cfg["vocab_size"],
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=rope_theta,
            rope_scaling=rope_scaling,
            max_position_embeddings=cfg.get("max_position_embeddings", 2048),
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=always_qkv_bias or attention_bias,
            o_proj_bias=attention_bias and not always_qkv_bias,
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            sliding_window=cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None,
            torch_dtype=cfg.get("dtype") or cfg.get("torch_dtype"),
            quantization_config=cfg.get("quantization_config"),
        )


def _architecture(cfg: dict) -> str:
    names = cfg.get("architectures") or []
    by_type = {model_type: arch for arch, (model_type, _) in _ARCHITECTURES.items()}
    architecture = names[0] if names else by_type.get(cfg.get("model_type"))
    if architecture not in _ARCHITECTURES:
        raise ValueError(
            f"unsupported architecture {architecture or cfg.get('model_type')!r} "
            f"(supported: {', '.join(_ARCHITECTURES)})"
        )
    return architecture


def _rope(cfg: dict) -> tuple[float, dict | None]:
    """(theta, scaling) from transformers 5's `rope_parameters` or 4.x's `rope_theta` + `rope_scaling`."""
    params = dict(cfg.get("rope_parameters") or cfg.get("rope_scaling") or {})
    theta = float(params.pop("rope_theta", cfg.get("rope_theta", 10000.0)))
    rope_type = params.pop("rope_type", None) or params.pop("type", None) or "default"
    params.pop("type", None)
    if rope_type == "default":
        return theta, None
    return theta, {"rope_type": rope_type, **params}
