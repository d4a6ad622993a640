"""The CPU C kernels for the model's elementwise ops against their torch references.

What is compared, and why those bounds:
- rotary: bit-identical in fp32 and bf16. Every step is one IEEE operation (a product or a sum, each rounded
  to the element dtype as torch rounds it), so there is no freedom to differ.
- the residual sum x + residual of rms_norm: bit-identical, one rounded add.
- rms_norm's normed output: fp32 within 1e-6 relative; bf16 within 1 ulp, and mismatching in under 0.1% of
  the elements. The kernel rounds where the reference rounds, but sums the squares in another order (torch's
  own fp32 sum is not exactly rounded either), so rstd can differ in the last fp32 bit and, rarely, that flips
  a bf16 rounding.
- silu_and_mul: fp32 within 1e-6 relative, bf16 within 1 ulp (under 0.1%). The kernel's exp is the one torch's
  vectorised CPU loops call (SLEEF expf_u10), so it is bit-identical wherever torch stays vectorised (asserted
  below); torch's scalar loop over the last elements of a row (or of a thread's chunk) calls libm's expf,
  which can differ by one fp32 ulp.
The 0.1% bound matters: a kernel that skips a rounding step differs by 1 ulp in a large share of the elements
(the last test shows the bound catches that).
"""

import pytest
import torch

from kernels.cpu import rms_norm as cpu_rms_norm
from kernels.cpu import rotary as cpu_rotary
from kernels.cpu import silu_and_mul as cpu_silu
from kernels.rms_norm import rms_norm_ref
from kernels.rotary import apply_rotary_ref, rope_cos_sin_cache, rope_inv_freq

DTYPES = [torch.float32, torch.bfloat16]
NUM_TOKENS = [1, 7, 1024]
WIDTHS = [576, 64, 100]  # SmolLM2's hidden size, a small one, one that is not a multiple of 16
EPS = 1e-5
MAX_POSITION = 8192


def _bf16_ulps(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Units in the last place between bf16 tensors (bit patterns mapped to ordered integers)."""

    def ordered(t):
        bits = t.view(torch.int16).int()
        return torch.where(bits < 0, -32768 - bits, bits)

    return (ordered(a) - ordered(b)).abs()


def assert_matches(out: torch.Tensor, ref: torch.Tensor):
    assert out.dtype == ref.dtype and out.shape == ref.shape
    if ref.dtype == torch.float32:
        torch.testing.assert_close(out, ref, rtol=1e-6, atol=0)
        return
    ulps = _bf16_ulps(out, ref)
    assert ulps.max().item() <= 1, f"{ulps.max().item()} bf16 ulps apart"
    assert (ulps > 0).float().mean().item() < 1e-3, f"{(ulps > 0).sum().item()} of {ulps.numel()} differ"


def _randn(*shape, dtype, seed, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(*shape, generator=gen)).to(dtype)


def test_builds_here():
    """CI machines have a C compiler: the kernels must build, or every other test here would be moot."""
    for kernel in (cpu_rms_norm, cpu_rotary, cpu_silu):
        assert kernel.supports(torch.empty(1)) and kernel.supports(torch.empty(1, dtype=torch.bfloat16))
        assert not kernel.supports(torch.empty(1, dtype=torch.float16))


# --- rms_norm ---


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("hidden", WIDTHS)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
def test_rms_norm_matches_ref(num_tokens, hidden, dtype):
    x = _randn(num_tokens, hidden, dtype=dtype, seed=0)
    residual = _randn(num_tokens, hidden, dtype=dtype, seed=1)
    weight = 1 + _randn(hidden, dtype=dtype, seed=2, scale=0.1)
    assert_matches(cpu_rms_norm.rms_norm(x, weight, EPS), rms_norm_ref(x, weight, EPS))
    normed, summed = cpu_rms_norm.rms_norm(x, weight, EPS, residual=residual)
    ref_normed, ref_summed = rms_norm_ref(x, weight, EPS, residual=residual)
    assert torch.equal(summed, ref_summed)
    assert_matches(normed, ref_normed)


@pytest.mark.parametrize(
    ("x_dtype", "weight_dtype"), [(torch.bfloat16, torch.float32), (torch.float32, torch.bfloat16)]
)
def test_rms_norm_promotes_like_ref(x_dtype, weight_dtype):
    """The output has promote_types(x, weight): an fp32 weight on bf16 activations gives fp32 (product unrounded)."""
    x = _randn(33, 576, dtype=x_dtype, seed=3)
    residual = _randn(33, 576, dtype=x_dtype, seed=4)
    weight = 1 + _randn(576, dtype=weight_dtype, seed=5, scale=0.1)
    normed, summed = cpu_rms_norm.rms_norm(x, weight, EPS, residual=residual)
    ref_normed, ref_summed = rms_norm_ref(x, weight, EPS, residual=residual)
    assert normed.dtype == torch.float32 and torch.equal(summed, ref_summed)
    # fp32 output of a bf16-rounded normed value: a flipped bf16 rounding is 2^-8 relative, allowed rarely.
    close = torch.isclose(normed, ref_normed, rtol=1e-6, atol=0)
    assert (~close).float().mean().item() < 1e-3
    torch.testing.assert_close(normed, ref_normed, rtol=2**-7, atol=0)


def test_rms_norm_accepts_leading_dims_and_empty():
    x = _randn(2, 3, 64, dtype=torch.bfloat16, seed=6)
    weight = 1 + _randn(64, dtype=torch.bfloat16, seed=7, scale=0.1)
    assert_matches(cpu_rms_norm.rms_norm(x, weight, EPS), rms_norm_ref(x, weight, EPS))
    empty = torch.empty(0, 64, dtype=torch.bfloat16)
    assert cpu_rms_norm.rms_norm(empty, weight, EPS, residual=empty)[0].shape == (0, 64)


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_rms_norm_check_catches_a_wrong_eps(dtype):
    x = _randn(7, 64, dtype=dtype, seed=8, scale=0.01)  # small activations, so eps matters
    weight = 1 + _randn(64, dtype=dtype, seed=9, scale=0.1)
    with pytest.raises(AssertionError):
        assert_matches(cpu_rms_norm.rms_norm(x, weight, 1e-4), rms_norm_ref(x, weight, EPS))


# --- silu_and_mul ---


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("inter", WIDTHS)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
def test_silu_and_mul_matches_ref(num_tokens, inter, dtype):
    gate_up = _randn(num_tokens, 2 * inter, dtype=dtype, seed=10, scale=3.0)
    assert_matches(cpu_silu.silu_and_mul(gate_up), cpu_silu.silu_and_mul_ref(gate_up))


_VECTORISED_TORCH = torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


@pytest.mark.skipif(not _VECTORISED_TORCH, reason="torch's CPU kernels here do not call SLEEF's vector exp")
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
def test_silu_and_mul_is_bit_identical_where_torch_vectorises(dtype):
    """Rows a multiple of 64 long, few enough elements that torch does not split them between threads: torch
    takes its vectorised path for every element, and the kernel's exp is that path's exp."""
    specials = [-200.0, -105.0, -104.0, -103.9, -88.0, -20.0, -1e-3, -0.0, 0.0, 1e-3, 20.0, 88.0, 89.0, 99.5]
    specials += [100.0, 100.5, 200.0, float("inf"), float("-inf"), float("nan")]
    gate = _randn(5, 1536, dtype=torch.float32, seed=11, scale=4.0)
    gate[0, : len(specials)] = torch.tensor(specials)
    gate_up = torch.cat([gate, _randn(5, 1536, dtype=torch.float32, seed=12)], dim=1).to(dtype)
    out, ref = cpu_silu.silu_and_mul(gate_up), cpu_silu.silu_and_mul_ref(gate_up)
    assert torch.equal(out.isnan(), ref.isnan())
    assert torch.equal(out.nan_to_num(), ref.nan_to_num())


def test_silu_and_mul_check_catches_swapped_halves():
    gate_up = _randn(7, 2 * 576, dtype=torch.bfloat16, seed=13, scale=3.0)
    swapped = torch.cat(gate_up.chunk(2, dim=-1)[::-1], dim=-1)
    with pytest.raises(AssertionError):
        assert_matches(cpu_silu.silu_and_mul(swapped), cpu_silu.silu_and_mul_ref(gate_up))


def test_silu_and_mul_reads_a_strided_gate_up():
    wide = _randn(7, 3 * 64, dtype=torch.bfloat16, seed=14)
    gate_up = wide[:, :128]
    assert torch.equal(cpu_silu.silu_and_mul(gate_up), cpu_silu.silu_and_mul_ref(gate_up.contiguous()))


# --- rotary ---


def _cos_sin_cache(head_dim):
    return rope_cos_sin_cache(rope_inv_freq(head_dim, 10000.0), MAX_POSITION, torch.float32)


def _qkv(num_tokens, num_q_heads, num_kv_heads, head_dim, dtype, seed):
    """q, k, v as the model has them: views of one fused projection output, split along the last dim."""
    q_size, kv_size = num_q_heads * head_dim, num_kv_heads * head_dim
    qkv = _randn(num_tokens, q_size + 2 * kv_size, dtype=dtype, seed=seed)
    q, k, v = qkv.split([q_size, kv_size, kv_size], dim=-1)
    return (
        q.view(num_tokens, num_q_heads, head_dim),
        k.view(num_tokens, num_kv_heads, head_dim),
        v.view(num_tokens, num_kv_heads, head_dim),
    )


# (num_q_heads, num_kv_heads, head_dim): SmolLM2's GQA 3:1, MHA, MQA with a head_dim not a multiple of 16
HEADS = [(9, 3, 64), (4, 4, 128), (6, 1, 100)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("num_tokens", NUM_TOKENS)
def test_rotary_is_bit_identical_to_ref(num_tokens, heads, dtype):
    q, k, v = _qkv(num_tokens, *heads, dtype=dtype, seed=15)
    v_before = v.clone()
    gen = torch.Generator().manual_seed(16)
    positions = torch.randint(0, MAX_POSITION, (num_tokens,), generator=gen)
    cache = _cos_sin_cache(heads[2])
    ref_q, ref_k = apply_rotary_ref(q, k, positions, cache)
    out_q, out_k = cpu_rotary.apply_rotary(q, k, positions, cache)
    assert out_q.data_ptr() == q.data_ptr() and out_k.data_ptr() == k.data_ptr()  # in place, as documented
    assert torch.equal(out_q, ref_q) and torch.equal(out_k, ref_k)
    assert torch.equal(v, v_before)  # the rest of the fused buffer is untouched


def test_rotary_check_catches_shifted_positions():
    q, k, _ = _qkv(7, 9, 3, 64, dtype=torch.bfloat16, seed=17)
    positions = torch.arange(7) + 100
    ref_q, ref_k = apply_rotary_ref(q, k, positions, _cos_sin_cache(64))
    out_q, out_k = cpu_rotary.apply_rotary(q, k, positions + 1, _cos_sin_cache(64))
    assert not torch.equal(out_q, ref_q) and not torch.equal(out_k, ref_k)


# --- the tolerance itself ---


def test_bf16_bound_catches_a_skipped_rounding():
    """Applying the weight before rounding the normed value (a common shortcut) stays within 1 bf16 ulp of
    the reference, but in far more than 0.1% of the elements: the bound on the mismatch rate catches it."""
    x = _randn(1024, 576, dtype=torch.bfloat16, seed=18)
    weight = 1 + _randn(576, dtype=torch.bfloat16, seed=19, scale=0.1)
    xf = x.float()
    shortcut = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS) * weight.float()).to(x.dtype)
    with pytest.raises(AssertionError, match="differ"):
        assert_matches(shortcut, rms_norm_ref(x, weight, EPS))
