import pytest
import torch

from kernels.cpu import paged_attention_decode as cpu
from tests.kernels.test_paged_attention_decode import CONFIGS, TOLERANCE, _decode_inputs, _dense_decode

DTYPES = [torch.float32, torch.bfloat16]
CPU = torch.device("cpu")


def test_builds_here():
    """CI machines have a C compiler: the kernel must build, or every other test here would be moot."""
    assert cpu.supports(torch.empty(1, 1, 1))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "config",
    [
        *CONFIGS,
        ([300, 1, 16, 17, 255, 700], 9, 3, 64, 16),
        ([5, 129], 32, 8, 128, 16),
        ([20, 3, 33], 4, 2, 24, 16),
    ],
)
def test_matches_dense_attention(config, dtype):
    q, kv, scale = _decode_inputs(config, dtype, CPU, seed=3)
    out = cpu.paged_attention_decode(q, kv.k_cache, kv.v_cache, kv.block_tables, kv.context_lens, scale)
    assert out.dtype == dtype and out.shape == q.shape
    torch.testing.assert_close(out.double(), _dense_decode(q, kv, scale), **TOLERANCE[dtype])


def test_tolerance_catches_an_off_by_one_context():
    q, kv, scale = _decode_inputs(CONFIGS[1], torch.float32, CPU)
    shorter = (kv.context_lens - 1).clamp(min=1)
    out = cpu.paged_attention_decode(q, kv.k_cache, kv.v_cache, kv.block_tables, shorter, scale)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(out.double(), _dense_decode(q, kv, scale), **TOLERANCE[torch.float32])
