import pytest
import torch

from kernels.kv_write import write_kv, write_kv_ref

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (num_tokens, num_kv_heads, head_dim, block_size, num_blocks)
SHAPES = [(1, 1, 16, 8, 2), (13, 2, 64, 16, 4), (40, 3, 80, 32, 3)]


def _inputs(shape, dtype, device, seed=0):
    num_tokens, num_kv_heads, head_dim, block_size, num_blocks = shape
    gen = torch.Generator().manual_seed(seed)
    key = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen).to(dtype=dtype, device=device)
    value = torch.randn(num_tokens, num_kv_heads, head_dim, generator=gen).to(dtype=dtype, device=device)
    cache_shape = (num_blocks, block_size, num_kv_heads, head_dim)
    k_cache = torch.randn(cache_shape, generator=gen).to(dtype=dtype, device=device)
    v_cache = torch.randn(cache_shape, generator=gen).to(dtype=dtype, device=device)
    slots = torch.randperm(num_blocks * block_size, generator=gen)[:num_tokens]
    slots[torch.rand(num_tokens, generator=gen) < 0.25] = -1  # padding tokens
    return key, value, k_cache, v_cache, slots.to(device)


def _naive_write(key, value, k_cache, v_cache, slot_mapping):
    block_size = k_cache.shape[1]
    for token, slot in enumerate(slot_mapping.tolist()):
        if slot >= 0:
            k_cache[slot // block_size, slot % block_size] = key[token]
            v_cache[slot // block_size, slot % block_size] = value[token]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_ref_and_kernel_match_a_per_token_loop(shape, dtype, device):
    key, value, k_cache, v_cache, slots = _inputs(shape, dtype, device)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    _naive_write(key, value, expected_k, expected_v, slots)
    assert not torch.equal(expected_k, k_cache)  # the write is visible at all
    for op in (write_kv_ref, write_kv):
        got_k, got_v = k_cache.clone(), v_cache.clone()
        op(key, value, got_k, got_v, slots)
        assert torch.equal(got_k, expected_k) and torch.equal(got_v, expected_v), op.__name__


def test_kernel_reads_keys_and_values_out_of_a_fused_qkv(device):
    """key/value as strided views into one [T, (Hq + 2 Hkv) * D] projection output."""
    num_tokens, num_q_heads, num_kv_heads, head_dim, block_size = 6, 4, 2, 32, 8
    gen = torch.Generator().manual_seed(1)
    qkv = torch.randn(num_tokens, (num_q_heads + 2 * num_kv_heads) * head_dim, generator=gen).to(device)
    q_size, kv_size = num_q_heads * head_dim, num_kv_heads * head_dim
    key = qkv[:, q_size : q_size + kv_size].view(num_tokens, num_kv_heads, head_dim)
    value = qkv[:, q_size + kv_size :].view(num_tokens, num_kv_heads, head_dim)
    k_cache = torch.zeros(2, block_size, num_kv_heads, head_dim, device=device)
    v_cache = torch.zeros_like(k_cache)
    slots = torch.tensor([3, -1, 9, 0, 15, 4], device=device)
    expected_k, expected_v = k_cache.clone(), v_cache.clone()
    _naive_write(key, value, expected_k, expected_v, slots)
    write_kv(key, value, k_cache, v_cache, slots)
    assert torch.equal(k_cache, expected_k) and torch.equal(v_cache, expected_v)
