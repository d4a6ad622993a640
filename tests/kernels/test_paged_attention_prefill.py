import pytest
import torch

from kernels.paged_attention_decode import paged_attention_decode_ref
from kernels.paged_attention_prefill import paged_attention_prefill, paged_attention_prefill_ref
from tests.kernels.paged_cache import dense_attention, make_paged_kv

TOLERANCE = {
    torch.float32: dict(atol=2e-5, rtol=1e-5),
    torch.float16: dict(atol=3e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=2e-2, rtol=2e-2),
}

# ([(cached prefix, chunk length) per sequence], num_heads, num_kv_heads, head_dim, block_size)
CONFIGS = [
    ([(0, 5), (0, 1), (0, 13)], 4, 4, 32, 16),  # plain prompts, MHA
    ([(7, 1), (20, 13), (0, 9)], 6, 2, 64, 8),  # prefix hits and a one-token extend, GQA
    ([(40, 17), (3, 30)], 4, 1, 16, 32),  # chunks past 16 queries (64-row tiles), MQA
    ([(5, 70)], 2, 2, 80, 16),  # two query tiles, head_dim not a power of two
]


def _prefill_inputs(config, dtype, device, seed=0):
    chunks, num_heads, num_kv_heads, head_dim, block_size = config
    gen = torch.Generator().manual_seed(seed)
    context_lens = [prefix + q_len for prefix, q_len in chunks]
    kv = make_paged_kv(context_lens, num_kv_heads, head_dim, block_size, dtype, device, gen)
    q_lens = [q_len for _, q_len in chunks]
    q = torch.randn(sum(q_lens), num_heads, head_dim, generator=gen).to(dtype=dtype, device=device)
    starts = torch.tensor([0, *q_lens], device=device).cumsum(0).to(torch.int32)
    args = (q, kv.k_cache, kv.v_cache, kv.block_tables, starts, kv.context_lens, head_dim**-0.5, max(q_lens))
    return args, kv


def _dense_prefill(args, kv):
    q, starts, scale = args[0], args[4].tolist(), args[6]
    outs = []
    for seq, (k, v) in enumerate(zip(kv.keys, kv.values, strict=True)):
        q_len = starts[seq + 1] - starts[seq]
        positions = torch.arange(k.shape[0] - q_len, k.shape[0], device=q.device)
        outs.append(dense_attention(q[starts[seq] : starts[seq + 1]], k, v, positions, scale))
    return torch.cat(outs)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("config", CONFIGS)
def test_ref_matches_dense_attention(config, dtype, device):
    args, kv = _prefill_inputs(config, dtype, device)
    out = paged_attention_prefill_ref(*args)
    assert out.dtype == dtype
    torch.testing.assert_close(out.double(), _dense_prefill(args, kv), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("config", CONFIGS)
def test_kernel_matches_ref(config, dtype, device):
    args, _ = _prefill_inputs(config, dtype, device, seed=1)
    out = paged_attention_prefill(*args)
    assert out.dtype == dtype and not out.isnan().any()
    torch.testing.assert_close(out, paged_attention_prefill_ref(*args), **TOLERANCE[dtype])


def test_last_query_of_a_chunk_equals_decode(device):
    """The final token of each chunk sees the whole context, exactly what a decode step computes."""
    args, kv = _prefill_inputs(CONFIGS[1], torch.float32, device, seed=2)
    q, starts = args[0], args[4]
    last = starts[1:].long() - 1
    decode = paged_attention_decode_ref(
        q[last], kv.k_cache, kv.v_cache, kv.block_tables, kv.context_lens, args[6]
    )
    torch.testing.assert_close(paged_attention_prefill(*args)[last], decode)


def test_tolerance_catches_an_ignored_prefix(device):
    """Treating each chunk as a fresh prompt (no cached prefix) must fail the comparison."""
    args, kv = _prefill_inputs(CONFIGS[1], torch.bfloat16, device)
    q_lens = (args[4][1:] - args[4][:-1]).to(torch.int32)
    out = paged_attention_prefill(*args[:5], q_lens, *args[6:])
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out.double(), _dense_prefill(args, kv), **TOLERANCE[torch.bfloat16])
