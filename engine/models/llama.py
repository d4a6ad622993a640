"""Llama-family decoder (Llama, Mistral, Qwen2) over a paged KV cache.

Every op runs once over all T tokens of a step, whatever mix of decodes and prefill chunks they are; only
attention looks at sequence boundaries, through `AttentionMetadata`. The residual stream is carried beside
the hidden states so each RMSNorm also does the residual add:

    h, r = norm1(h, r)   ->  attention  ->  h, r = norm2(h, r)  ->  MLP  ->  next layer
"""

from __future__ import annotations

import torch
from torch import nn

from engine.attention import AttentionMetadata, paged_attention, write_kv
from engine.kernel_path import pick
from engine.models.config import ModelConfig
from engine.models.layers import Embedding, Linear, LinearFactory, RMSNorm, RotaryEmbedding, linear_factory
from kernels.cpu import silu_and_mul as cpu_silu_and_mul

KVCache = tuple[torch.Tensor, torch.Tensor]  # (k_cache, v_cache), each [num_blocks, block_size, kv_heads, D]


class LlamaAttention(nn.Module):
    def __init__(self, config: ModelConfig, rotary_emb: RotaryEmbedding, linear: LinearFactory):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = config.num_key_value_heads
        self.head_dim = config.head_dim
        self.q_size, self.kv_size = config.q_size, config.kv_size
        self.scale = self.head_dim**-0.5
        self.qkv_proj = linear(config.hidden_size, self.q_size + 2 * self.kv_size, config.qkv_bias)
        self.o_proj = linear(self.q_size, config.hidden_size, config.o_proj_bias)
        self.rotary_emb = rotary_emb

    def forward(
        self, positions: torch.Tensor, hidden: torch.Tensor, kv_cache: KVCache, meta: AttentionMetadata
    ) -> torch.Tensor:
        num_tokens = hidden.shape[0]
        q, k, v = self.qkv_proj(hidden).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        q = q.view(num_tokens, self.num_heads, self.head_dim)
        k = k.view(num_tokens, self.num_kv_heads, self.head_dim)
        v = v.view(num_tokens, self.num_kv_heads, self.head_dim)
        q, k = self.rotary_emb(positions, q, k)
        k_cache, v_cache = kv_cache
        write_kv(k, v, k_cache, v_cache, meta)
        out = paged_attention(q, k_cache, v_cache, meta, self.scale)
        return self.o_proj(out.reshape(num_tokens, self.q_size))


class LlamaMLP(nn.Module):
    def __init__(self, config: ModelConfig, linear: LinearFactory):
        super().__init__()
        self.gate_up_proj = linear(config.hidden_size, 2 * config.intermediate_size, config.mlp_bias)
        self.down_proj = linear(config.intermediate_size, config.hidden_size, config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate_up = self.gate_up_proj(x)
        op = pick(
            gate_up,
            triton=None,
            cpu=cpu_silu_and_mul,
            name="silu_and_mul",
            reference=cpu_silu_and_mul.silu_and_mul_ref,
        )
        return self.down_proj(op(gate_up))


class LlamaDecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, rotary_emb: RotaryEmbedding, linear: LinearFactory):
        super().__init__()
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.self_attn = LlamaAttention(config, rotary_emb, linear)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = LlamaMLP(config, linear)

    def forward(self, positions, hidden, residual, kv_cache: KVCache, meta: AttentionMetadata):
        if residual is None:
            hidden, residual = self.input_layernorm(hidden), hidden
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, kv_cache, meta)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(self, config: ModelConfig, linear: LinearFactory):
        super().__init__()
        self.embed_tokens = Embedding(config.vocab_size, config.hidden_size)
        rotary_emb = RotaryEmbedding(
            config.head_dim, config.max_position_embeddings, config.rope_theta, config.rope_scaling
        )
        self.layers = nn.ModuleList(
            LlamaDecoderLayer(config, rotary_emb, linear) for _ in range(config.num_hidden_layers)
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(
        self, input_ids, positions, kv_caches: list[KVCache], meta: AttentionMetadata
    ) -> torch.Tensor:
        hidden, residual = self.embed_tokens(input_ids), None
        for layer, kv_cache in zip(self.layers, kv_caches, strict=True):
            hidden, residual = layer(positions, hidden, residual, kv_cache, meta)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    """The model runner's contract: forward() -> final-normed hidden [T, hidden]; compute_logits() -> fp32."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.model = LlamaModel(config, linear_factory(config.quantization_config))
        self.lm_head = Linear(config.hidden_size, config.vocab_size)  # never quantized
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        kv_caches: list[KVCache],
        meta: AttentionMetadata,
    ) -> torch.Tensor:
        return self.model(input_ids, positions, kv_caches, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(hidden).float()
