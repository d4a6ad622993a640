import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from kernels.rms_norm import rms_norm, rms_norm_ref

# The kernel rounds at the same three points as the reference (sum, normed value, times weight) but
# sums in another order, and the interpreter truncates to bf16 instead of rounding: a few units in the
# last place of the output dtype.
TOLERANCE = {
    torch.float32: dict(atol=1e-5, rtol=1e-5),
    torch.float16: dict(atol=2e-3, rtol=2e-3),
    torch.bfloat16: dict(atol=1e-2, rtol=2.5e-2),
}
SHAPES = [(1, 16), (7, 96), (33, 1000)]
EPS = 1e-5


def _inputs(shape, dtype, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=gen).to(dtype=dtype, device=device)
    residual = torch.randn(shape, generator=gen).to(dtype=dtype, device=device)
    weight = (1 + 0.1 * torch.randn(shape[1], generator=gen)).to(dtype=dtype, device=device)
    return x, residual, weight


def _hf_rms_norm(x, weight):
    norm = LlamaRMSNorm(x.shape[1], eps=EPS).to(device=x.device, dtype=x.dtype)
    norm.weight.data.copy_(weight)
    with torch.no_grad():
        return norm(x)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES)
def test_ref_is_bit_identical_to_hf(shape, dtype, device):
    x, residual, weight = _inputs(shape, dtype, device)
    assert torch.equal(rms_norm_ref(x, weight, EPS), _hf_rms_norm(x, weight))
    normed, summed = rms_norm_ref(x, weight, EPS, residual=residual)
    assert torch.equal(summed, x + residual)
    assert torch.equal(normed, _hf_rms_norm(x + residual, weight))


def test_bit_identity_check_can_fail(device):
    """Applying the weight before rounding (a common shortcut) is not HF's result in bf16."""
    x, _, weight = _inputs((33, 1000), torch.bfloat16, device)
    xf = x.float()
    shortcut = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * weight.float()).to(x.dtype)
    assert not torch.equal(shortcut, _hf_rms_norm(x, weight))


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_ref(shape, dtype, device):
    x, residual, weight = _inputs(shape, dtype, device, seed=1)
    torch.testing.assert_close(rms_norm(x, weight, EPS), rms_norm_ref(x, weight, EPS), **TOLERANCE[dtype])
    normed, summed = rms_norm(x, weight, EPS, residual=residual)
    ref_normed, ref_summed = rms_norm_ref(x, weight, EPS, residual=residual)
    torch.testing.assert_close(summed, ref_summed, **TOLERANCE[dtype])
    torch.testing.assert_close(normed, ref_normed, **TOLERANCE[dtype])


def test_kernel_reads_strided_rows(device):
    """Rows of a wider buffer (e.g. a slice of a fused projection) are normalised in place of a copy."""
    x, _, weight = _inputs((5, 64), torch.float32, device)
    wide = torch.cat([x, torch.randn_like(x)], dim=1)[:, :64]
    torch.testing.assert_close(
        rms_norm(wide, weight, EPS), rms_norm_ref(x, weight, EPS), **TOLERANCE[torch.float32]
    )
