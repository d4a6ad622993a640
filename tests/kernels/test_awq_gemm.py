import pytest
import torch

from kernels.awq_gemm import awq_dequantize_ref, awq_gemm, awq_gemm_ref, awq_pack

# Outputs have |y| ~ 2 (K <= 384, |W| ~ 0.1): an fp16 ulp there is 2e-3, a bf16 ulp 1.6e-2.
TOLERANCE = {
    torch.float16: dict(atol=5e-3, rtol=5e-3),
    torch.bfloat16: dict(atol=3e-2, rtol=2.5e-2),
}

# (M, N, K, group_size): M <= 16 takes the split-K decode path, larger M the prefill tiles.
SHAPES = [
    (1, 64, 128, 32),
    (3, 40, 192, 64),
    (5, 136, 256, 128),
    (17, 72, 128, 32),
    (33, 24, 384, 128),
]


def _autoawq_pack(intweight: torch.Tensor) -> torch.Tensor:
    """The packing loop of AutoAWQ's WQLinear_GEMM.from_linear, kept as written there."""
    pack_num = 8
    packed = torch.zeros((intweight.shape[0], intweight.shape[1] // pack_num), dtype=torch.int32)
    order_map = [0, 2, 4, 6, 1, 3, 5, 7]
    for col in range(intweight.shape[1] // pack_num):
        for i in range(pack_num):
            packed[:, col] |= intweight[:, col * pack_num + order_map[i]].to(torch.int32) << (i * 4)
    return packed


def _quantized(K, N, group_size, device, seed=0):
    gen = torch.Generator().manual_seed(seed)
    intweight = torch.randint(0, 16, (K, N), generator=gen)
    zeros = torch.randint(0, 16, (K // group_size, N), generator=gen)
    scales = (0.01 + 0.01 * torch.rand(K // group_size, N, generator=gen)).half()
    qweight, qzeros = awq_pack(intweight, zeros)
    return intweight, zeros, qweight.to(device), qzeros.to(device), scales.to(device)


def test_pack_matches_a_hand_checked_word():
    # Nibble i (bits 4i .. 4i+3) holds column [0, 2, 4, 6, 1, 3, 5, 7][i]; read the hex from nibble 7 down.
    intweight = torch.tensor([[0, 1, 2, 3, 4, 5, 6, 7], [8, 9, 10, 11, 12, 13, 14, 15]])
    qweight, qzeros = awq_pack(intweight, intweight[:1])
    assert qweight.dtype == torch.int32 and qweight.shape == (2, 1)
    assert qweight[0, 0].item() == 0x75316420
    assert qweight[1, 0].item() == 0xFDB9ECA8 - (1 << 32)  # the same word as a signed int32
    assert qzeros[0, 0].item() == 0x75316420


def test_pack_matches_autoawq_loop():
    gen = torch.Generator().manual_seed(0)
    intweight = torch.randint(0, 16, (32, 48), generator=gen)
    zeros = torch.randint(0, 16, (2, 48), generator=gen)
    qweight, qzeros = awq_pack(intweight, zeros)
    assert torch.equal(qweight, _autoawq_pack(intweight))
    assert torch.equal(qzeros, _autoawq_pack(zeros))


@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_dequantize_ref_matches_per_element_formula(group_size, device):
    K, N = 256, 40
    intweight, zeros, qweight, qzeros, scales = _quantized(K, N, group_size, device)
    groups = torch.arange(K) // group_size
    expected = ((intweight - zeros[groups]).float() * scales.cpu().float()[groups]).half()
    weight = awq_dequantize_ref(qweight, qzeros, scales, group_size)
    assert weight.dtype == torch.float16
    assert torch.equal(weight.cpu(), expected)


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES)
def test_gemm_ref_matches_float64_matmul(shape, dtype, device):
    M, N, K, group_size = shape
    _, _, qweight, qzeros, scales = _quantized(K, N, group_size, device)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1)).to(dtype=dtype, device=device)
    weight = awq_dequantize_ref(qweight, qzeros, scales, group_size)
    out = awq_gemm_ref(x, qweight, qzeros, scales, group_size)
    assert out.dtype == dtype and out.shape == (M, N)
    torch.testing.assert_close(out.double(), x.double() @ weight.double(), **TOLERANCE[dtype])


@pytest.mark.parametrize("dtype", list(TOLERANCE))
@pytest.mark.parametrize("shape", SHAPES)
def test_kernel_matches_ref(shape, dtype, device):
    M, N, K, group_size = shape
    _, _, qweight, qzeros, scales = _quantized(K, N, group_size, device, seed=2)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(3)).to(dtype=dtype, device=device)
    out = awq_gemm(x, qweight, qzeros, scales, group_size)
    assert out.dtype == dtype and out.shape == (M, N)
    torch.testing.assert_close(out, awq_gemm_ref(x, qweight, qzeros, scales, group_size), **TOLERANCE[dtype])


def test_tolerance_catches_swapped_nibble_order(device):
    """Reading the columns in plain order (ignoring AWQ's interleave) must fail the comparison."""
    M, N, K, group_size = SHAPES[1]
    intweight, zeros, qweight, qzeros, scales = _quantized(K, N, group_size, device)
    plain = intweight.view(K, N // 8, 8)[..., [0, 4, 1, 5, 2, 6, 3, 7]].reshape(K, N)
    wrong_qweight, _ = awq_pack(plain, zeros)
    x = torch.randn(M, K, generator=torch.Generator().manual_seed(1)).half().to(device)
    out = awq_gemm(x, wrong_qweight.to(device), qzeros, scales, group_size)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(
            out, awq_gemm_ref(x, qweight, qzeros, scales, group_size), **TOLERANCE[torch.float16]
        )
