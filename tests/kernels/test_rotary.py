import pytest
import torch
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from kernels.rotary import apply_rotary, apply_rotary_ref, rope_cos_sin_cache, rope_inv_freq

# The kernel rotates in fp32 and rounds once; HF (and the reference) round each product and the sum.
TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1e-2, rtol=2.5e-2),
}

SCALINGS = [
    None,
    {"rope_type": "default"},
    {"rope_type": "linear", "factor": 4.0},
    {"type": "linear", "factor": 2.0},  # the older key
    {
        "rope_type": "llama3",
        "factor": 8.0,
        "low_freq_factor": 1.0,
        "high_freq_factor": 4.0,
        "original_max_position_embeddings": 8192,
    },
]
MAX_POSITION = 131072


def _hf_rotary(head_dim: int, base: float, scaling: dict | None) -> LlamaRotaryEmbedding:
    config = LlamaConfig(
        hidden_size=4 * head_dim,
        num_attention_heads=4,
        head_dim=head_dim,
        rope_parameters={**(scaling or {"rope_type": "default"}), "rope_theta": base},
        max_position_embeddings=MAX_POSITION,
    )
    return LlamaRotaryEmbedding(config)


@pytest.mark.parametrize("scaling", SCALINGS)
@pytest.mark.parametrize(("head_dim", "base"), [(64, 10000.0), (128, 500000.0)])
def test_inv_freq_is_bit_identical_to_transformers(head_dim, base, scaling):
    expected = _hf_rotary(head_dim, base, scaling).inv_freq
    inv_freq = rope_inv_freq(head_dim, base, scaling)
    assert inv_freq.dtype == torch.float32
    assert torch.equal(inv_freq, expected)


def test_unknown_scaling_is_rejected():
    with pytest.raises(ValueError, match="yarn"):
        rope_inv_freq(64, 10000.0, {"rope_type": "yarn", "factor": 4.0})


def _inputs(num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(num_tokens, num_q_heads, head_dim, generator=gen).to(dtype=dtype, device=device)
    k = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen).to(dtype=dtype, device=device)
    positions = torch.randint(0, 4096, (num_tokens,), generator=gen).to(device)
    return q, k, positions


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("scaling", [None, SCALINGS[-1]])
def test_ref_is_bit_identical_to_hf_apply_rotary_pos_emb(scaling, dtype, device):
    head_dim, base = 64, 500000.0
    q, k, positions = _inputs(11, 6, 2, head_dim, dtype, device)
    hf = _hf_rotary(head_dim, base, scaling).to(device)
    cos, sin = hf(q, positions[None, :])  # [1, T, D] in q's dtype
    expected_q, expected_k = apply_rotary_pos_emb(q, k, cos[0], sin[0], unsqueeze_dim=1)
    cache = rope_cos_sin_cache(rope_inv_freq(head_dim, base, scaling).to(device), 4096, dtype)
    out_q, out_k = apply_rotary_ref(q, k, positions, cache)
    assert torch.equal(out_q, expected_q) and torch.equal(out_k, expected_k)


# (num_tokens, num_q_heads, num_kv_heads, head_dim)
SHAPES = [(1, 4, 4, 16), (9, 6, 2, 64), (17, 8, 1, 96)]


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_ref(shape, dtype, device):
    num_tokens, num_q_heads, num_kv_heads, head_dim = shape
    q, k, positions = _inputs(num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, device, seed=1)
    cache = rope_cos_sin_cache(rope_inv_freq(head_dim, 10000.0).to(device), 4096, dtype)
    ref_q, ref_k = apply_rotary_ref(q, k, positions, cache)
    out_q, out_k = apply_rotary(q.clone(), k.clone(), positions, cache)
    torch.testing.assert_close(out_q, ref_q, **TOLERANCE[dtype])
    torch.testing.assert_close(out_k, ref_k, **TOLERANCE[dtype])


def test_kernel_rotates_views_of_a_fused_qkv_in_place(device):
    """q and k as column slices of one qkv buffer: strided rows, written in place."""
    num_tokens, num_q_heads, num_kv_heads, head_dim = 5, 4, 2, 32
    gen = torch.Generator().manual_seed(2)
    qkv = torch.randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim, generator=gen).to(device)
    q_size, kv_size = num_q_heads * head_dim, num_kv_heads * head_dim
    q = qkv[:, :q_size].view(num_tokens, num_q_heads, head_dim)
    k = qkv[:, q_size : q_size + kv_size].view(num_tokens, num_kv_heads, head_dim)
    v_before = qkv[:, q_size + kv_size :].clone()
    positions = torch.arange(3, 3 + num_tokens, device=device)
    cache = rope_cos_sin_cache(rope_inv_freq(head_dim, 10000.0).to(device), 64, torch.float32)
    ref_q, ref_k = apply_rotary_ref(q.clone(), k.clone(), positions, cache)
    out_q, out_k = apply_rotary(q, k, positions, cache)
    assert out_q.data_ptr() == q.data_ptr() and out_k.data_ptr() == k.data_ptr()
    torch.testing.assert_close(q, ref_q, **TOLERANCE[torch.float32])
    torch.testing.assert_close(k, ref_k, **TOLERANCE[torch.float32])
    assert torch.equal(qkv[:, q_size + kv_size :], v_before)


def test_tolerance_catches_an_off_by_one_position(device):
    q, k, positions = _inputs(9, 6, 2, 64, torch.bfloat16, device)
    cache = rope_cos_sin_cache(rope_inv_freq(64, 10000.0).to(device), 4096, torch.bfloat16)
    ref_q, _ = apply_rotary_ref(q, k, positions, cache)
    out_q, _ = apply_rotary(q.clone(), k.clone(), positions + 1, cache)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out_q, ref_q, **TOLERANCE[torch.bfloat16])
