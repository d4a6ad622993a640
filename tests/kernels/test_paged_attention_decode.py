import pytest
import torch

from kernels.paged_attention_decode import paged_attention_decode, paged_attention_decode_ref
from tests.kernels.paged_cache import dense_attention, make_paged_kv

# Outputs are softmax-weighted averages of N(0, 1) values, so |out| <~ 3; a masking or indexing bug
# moves them by O(0.1 .. 1).
TOLERANCE = {
    torch.float32: dict(atol=2e-5, rtol=1e-5),
    torch.float16: dict(atol=3e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}

# (context_lens, num_heads, num_kv_heads, head_dim, block_size)
CONFIGS = [
    ([1, 17, 40], 4, 4, 32, 16),  # MHA, a length-1 context
    ([33, 5, 64, 1], 6, 2, 64, 8),  # GQA 3:1
    ([70, 31], 4, 1, 16, 32),  # MQA
    ([130, 9], 8, 2, 80, 16),  # head_dim not a power of two, a context over two BLOCK_N tiles
]


def _decode_inputs(config, dtype, device, seed=0):
    context_lens, num_heads, num_kv_heads, head_dim, block_size = config
    gen = torch.Generator().manual_seed(seed)
    kv = make_paged_kv(context_lens, num_kv_heads, head_dim, block_size, dtype, device, gen)
    q = torch.randn(len(context_lens), num_heads, head_dim, generator=gen).to(dtype=dtype, device=device)
    return q, kv, head_dim**-0.5


def _dense_decode(q, kv, scale):
    outs = []
    for b, (k, v) in enumerate(zip(kv.keys, kv.values, strict=True)):
        last = torch.tensor([k.shape[0] - 1], device=q.device)
        outs.append(dense_attention(q[b : b + 1], k, v, last, scale)[0])
    return torch.stack(outs)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("config", CONFIGS)
def test_ref_matches_dense_attention(config, dtype, device):
    q, kv, scale = _decode_inputs(config, dtype, device)
    out = paged_attention_decode_ref(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.context_lens, scale)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), _dense_decode(q, kv, scale), **TOLERANCE[dtype])


@pytest.mark.parametrize("num_splits", [1, 3, None])
@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("config", CONFIGS)
def test_kernel_matches_ref(config, dtype, num_splits, device):
    q, kv, scale = _decode_inputs(config, dtype, device, seed=1)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, kv.context_lens, scale)
    out = paged_attention_decode(*args, num_splits=num_splits)
    assert out.dtype == dtype and not out.isnan().any()
    torch.testing.assert_close(out, paged_attention_decode_ref(*args), **TOLERANCE[dtype])


def test_splits_longer_than_some_contexts(device):
    """Many splits over a wide table: short sequences leave most splits empty, which must weigh 0."""
    q, kv, scale = _decode_inputs(([200, 3, 1], 4, 2, 32, 8), torch.float32, device, seed=2)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, kv.context_lens, scale)
    torch.testing.assert_close(
        paged_attention_decode(*args, num_splits=7), _dense_decode(q, kv, scale).float()
    )


def test_tolerance_catches_an_off_by_one_context(device):
    q, kv, scale = _decode_inputs(CONFIGS[1], torch.bfloat16, device)
    shorter = (kv.context_lens - 1).clamp(min=1)
    out = paged_attention_decode(q, kv.k_cache, kv.v_cache, kv.block_tables, shorter, scale)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out.double(), _dense_decode(q, kv, scale), **TOLERANCE[torch.bfloat16])
