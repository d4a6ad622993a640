"""Rotary position embedding, Hugging Face "rotate_half" (GPT-NeoX) convention as in HF Llama weights.

x = [x1 | x2] (halves of head_dim)      cos_sin_cache[pos] = [cos(pos * inv_freq) | sin(pos * inv_freq)]
out = [x1 * cos - x2 * sin | x2 * cos + x1 * sin]
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl


def rope_inv_freq(head_dim: int, base: float, scaling: dict | None = None) -> torch.Tensor:
    """inv_freq [head_dim // 2] fp32, as transformers' ROPE_INIT_FUNCTIONS compute it."""
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    inv_freq = 1.0 / (base**exponents)
    rope_type = (scaling or {}).get("rope_type", (scaling or {}).get("type", "default"))
    if rope_type == "default":
        return inv_freq
    if rope_type == "linear":
        return inv_freq / scaling["factor"]
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, scaling)
    raise ValueError(f"unsupported rope_scaling type {rope_type!r}")


def _llama3_inv_freq(inv_freq: torch.Tensor, scaling: dict) -> torch.Tensor:
    """Long wavelengths divided by `factor`, short ones kept, a smooth blend in between."""
    factor = scaling["factor"]
    low_freq_factor = scaling["low_freq_factor"]
    high_freq_factor = scaling["high_freq_factor"]
    old_context_len = scaling["original_max_position_embeddings"]
    low_freq_wavelen = old_context_len / low_freq_factor
    high_freq_wavelen = old_context_len / high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > low_freq_wavelen, inv_freq / factor, inv_freq)
    smooth = (old_context_len / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    is_medium = ~(wavelen < high_freq_wavelen) * ~(wavelen > low_freq_wavelen)
    return torch.where(is_medium, smoothed, scaled)


def rope_cos_sin_cache(inv_freq: torch.Tensor, max_position: int, dtype: torch.dtype) -> torch.Tensor:
    """[max_position, head_dim]: cos in the first half of the last dim, sin in the second."""
    freqs = torch.arange(max_position, device=inv_freq.device).float()[:, None] * inv_freq.float()[None, :]
    return torch.cat((freqs.cos(), freqs.sin()), dim=-1).to(dtype)


@triton.jit
def _rotate_heads(
    x_ptr,
    token,
    stride_t,
    stride_h,
    num_heads,
    cos,
    sin,
    half,
    BLOCK_H: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    offs_h = tl.arange(0, BLOCK_H)
    offs_d = tl.arange(0, BLOCK_HALF)
    mask = (offs_h[:, None] < num_heads) & (offs_d[None, :] < half)
    first = x_ptr + token * stride_t + offs_h[:, None] * stride_h + offs_d[None, :]
    x1 = tl.load(first, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(first + half, mask=mask, other=0.0).to(tl.float32)
    tl.store(first, x1 * cos[None, :] - x2 * sin[None, :], mask=mask)
    tl.store(first + half, x2 * cos[None, :] + x1 * sin[None, :], mask=mask)


@triton.jit
def _rotary_kernel(
    q_ptr,
    k_ptr,
    positions_ptr,
    cos_sin_ptr,
    stride_qt,
    stride_qh,
    stride_kt,
    stride_kh,
    stride_cache,
    num_q_heads,
    num_kv_heads,
    half,
    BLOCK_HQ: tl.constexpr,
    BLOCK_HK: tl.constexpr,
    BLOCK_HALF: tl.constexpr,
):
    token = tl.program_id(0).to(tl.int64)
    pos = tl.load(positions_ptr + token)
    offs_d = tl.arange(0, BLOCK_HALF)
    row = cos_sin_ptr + pos * stride_cache + offs_d
    cos = tl.load(row, mask=offs_d < half, other=0.0).to(tl.float32)
    sin = tl.load(row + half, mask=offs_d < half, other=0.0).to(tl.float32)
    _rotate_heads(q_ptr, token, stride_qt, stride_qh, num_q_heads, cos, sin, half, BLOCK_HQ, BLOCK_HALF)
    _rotate_heads(k_ptr, token, stride_kt, stride_kh, num_kv_heads, cos, sin, half, BLOCK_HK, BLOCK_HALF)


def apply_rotary(q, k, positions, cos_sin_cache):
    """q [T, Hq, D], k [T, Hkv, D], positions [T] -> (q, k) rotated in place."""
    num_tokens, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    assert q.stride(-1) == 1 and k.stride(-1) == 1 and cos_sin_cache.stride(-1) == 1
    half = head_dim // 2
    if num_tokens:
        _rotary_kernel[(num_tokens,)](
            q,
            k,
            positions,
            cos_sin_cache,
            q.stride(0),
            q.stride(1),
            k.stride(0),
            k.stride(1),
            cos_sin_cache.stride(0),
            num_q_heads,
            num_kv_heads,
            half,
            BLOCK_HQ=triton.next_power_of_2(num_q_heads),
            BLOCK_HK=triton.next_power_of_2(num_kv_heads),
            BLOCK_HALF=triton.next_power_of_2(half),
        )
    return q, k


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def apply_rotary_ref(q, k, positions, cos_sin_cache):
    """Bit-identical to HF's q * cos + rotate_half(q) * sin with cos/sin in the model dtype."""
    cos, sin = cos_sin_cache[positions].to(q.dtype)[:, None, :].chunk(2, dim=-1)
    return _rotate(q, cos, sin), _rotate(k, cos, sin)
