"""The weight-only int8 / int4 CPU linear (kernels/cpu/quant_linear.c) against its torch reference.

The reference multiplies by exactly the weights the kernel uses (`dequantize`: int4 is q * s + o rounded once,
as the kernel's FMA), so the only freedom is the order of the fp32 sums over K. The bound is therefore relative
to the magnitude of those sums, sum_k |x[m, k] w[n, k]|, times a factor of K fp32 epsilons:

    |kernel - reference| <= TOL * K * eps32 * sum_k |x w|      TOL per format below

The last tests show what the bound rules out: a weight off by one quantization step in one place, or a kernel
that used the unquantized weights, both fail it.
"""

import pytest
import torch

from kernels.cpu import quant_linear as ql

EPS32 = torch.finfo(torch.float32).eps
TOL = {8: 1.0, 4: 1.0}  # in units of K * eps32 * sum|x w|; summation-order error stays well under K * eps
# (M, N, K): decode (1), a small batch, a prefill tile count that leaves a remainder of rows, odd N (padding
# to 64 channels), SmolLM2's shapes
SHAPES = [(1, 960, 576), (3, 100, 64), (7, 576, 1536), (13, 200, 96), (33, 3072, 576), (1, 8, 32), (64, 1000, 128)]


def _inputs(m, n, k, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(m, k, generator=gen), torch.randn(n, k, generator=gen), torch.randn(n, generator=gen)


def _int4(n, k, group_size, seed):
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(0, 16, (n, k), generator=gen)
    scale = torch.rand(k // group_size, n, generator=gen) * 0.1 + 0.01
    zero = torch.randint(0, 16, (k // group_size, n), generator=gen)
    return ql.pack_int4(q, scale, -zero * scale, group_size)


def _bound(x, w: ql.PackedWeight):
    return TOL[w.bits] * w.in_features * EPS32 * (x.abs() @ ql.dequantize(w).abs().t()) + 1e-30


def _assert_close(out, ref, bound):
    excess = ((out - ref).abs() / bound).max().item()
    assert excess <= 1.0, f"{excess:.2f}x over the bound"


def test_builds_here():
    assert ql.supports(torch.empty(1))
    assert not ql.supports(torch.empty(1, dtype=torch.bfloat16))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("group_size", [None, 32], ids=["per-channel", "g32"])
def test_int8_matches_ref(shape, bias, group_size):
    m, n, k = shape
    x, weight, b = _inputs(m, n, k, seed=m * n + k)
    w = ql.quantize_int8(weight, group_size)
    b = b if bias else None
    _assert_close(ql.quant_linear(x, w, b), ql.quant_linear_ref(x, w, b), _bound(x, w))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("group_size", [32, 0], ids=["g32", "one-group"])
def test_int4_matches_ref(shape, group_size):
    m, n, k = shape
    x, _, b = _inputs(m, n, k, seed=m + n + k)
    w = _int4(n, k, group_size or k, seed=n)
    _assert_close(ql.quant_linear(x, w, b), ql.quant_linear_ref(x, w, b), _bound(x, w))


def test_leading_dims_and_empty():
    x, weight, _ = _inputs(6, 70, 64, seed=1)
    w = ql.quantize_int8(weight)
    out = ql.quant_linear(x.view(2, 3, 64), w)
    assert out.shape == (2, 3, 70)
    torch.testing.assert_close(out.view(6, 70), ql.quant_linear(x, w), rtol=0, atol=0)
    assert ql.quant_linear(torch.empty(0, 64), w).shape == (0, 70)


def test_rows_do_not_depend_on_the_batch():
    """Each row is summed in the same order whatever else is in the batch: batch-invariant outputs."""
    x, weight, _ = _inputs(29, 130, 576, seed=3)
    w = ql.quantize_int8(weight)
    batched = ql.quant_linear(x, w)
    for i in (0, 5, 28):
        assert torch.equal(ql.quant_linear(x[i : i + 1], w), batched[i : i + 1])


def test_int8_quantization_error_is_per_channel_rounding():
    weight = _inputs(1, 50, 300, seed=4)[1]
    w = ql.quantize_int8(weight)
    step = weight.abs().amax(dim=1, keepdim=True) / 127
    assert ((ql.dequantize(w) - weight).abs() <= step / 2 * (1 + 1e-6)).all()


def test_int8_groups_give_q8_0_weights_back():
    """llama.cpp's Q8_0 (d = max|w| / 127 per 32 weights, fp16 d) dequantized, then quantized again: the same."""
    gen = torch.Generator().manual_seed(8)
    q = torch.randint(-127, 128, (96, 128), generator=gen)
    q[:, ::32] = 127  # Q8_0 maps each group's largest magnitude to +-127
    d = (torch.rand(96, 4, generator=gen) * 0.01).half().float()
    weight = q.float() * d.repeat_interleave(32, dim=1)
    assert torch.equal(ql.dequantize(ql.quantize_int8(weight, 32)), weight)


def test_int4_dequantize_is_exact():
    """(q - z) * s of the AWQ reference equals q * s + (-z * s): the bits the kernel multiplies by."""
    gen = torch.Generator().manual_seed(5)
    q = torch.randint(0, 16, (64, 64), generator=gen)
    scale = torch.rand(2, 64, generator=gen).half().float()
    zero = torch.randint(0, 16, (2, 64), generator=gen)
    w = ql.pack_int4(q, scale, -zero * scale, 32)
    expected = (q - zero.t().repeat_interleave(32, dim=1)) * scale.t().repeat_interleave(32, dim=1)
    assert torch.equal(ql.dequantize(w), expected.float())


def test_bound_catches_one_wrong_weight():
    x, weight, _ = _inputs(4, 64, 256, seed=6)
    w = ql.quantize_int8(weight)
    wrong = ql.PackedWeight(w.packed.clone(), w.scale, None, 64, 256, 256, 8)
    flat = wrong.packed.view(torch.int8).view(-1)
    flat[1000] = flat[1000] + (1 if flat[1000] < 127 else -1)
    with pytest.raises(AssertionError, match="over the bound"):
        _assert_close(ql.quant_linear(x, wrong), ql.quant_linear_ref(x, w), _bound(x, w))


def test_bound_catches_unquantized_weights():
    x, weight, _ = _inputs(4, 64, 256, seed=7)
    w = ql.quantize_int8(weight)
    with pytest.raises(AssertionError, match="over the bound"):
        _assert_close(x @ weight.t(), ql.quant_linear_ref(x, w), _bound(x, w))
