"""AWQ W4A16 GEMM over AutoAWQ's GEMM layout, dequantising in registers.

    qweight [K, N // 8] int32     qzeros [K // group_size, N // 8] int32     scales [K // group_size, N] fp16
    W[k, n] = (q[k, n] - z[k // group_size, n]) * s[k // group_size, n]        out = x @ W

Eight 4-bit columns share an int32, interleaved in AutoAWQ's order:

    nibble (bits)   0 (0-3)  1 (4-7)  2  3  4  5  6  7 (28-31)
    logical column  0        2        4  6  1  3  5  7          AWQ_ORDER

so logical column j lives in nibble AWQ_REVERSE_ORDER[j] = (j // 2) + 4 * (j % 2).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from kernels.launch import dot_operands, num_sms

AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)
AWQ_REVERSE_ORDER = (0, 4, 1, 5, 2, 6, 3, 7)
_SMALL_M = 16


@triton.jit
def _awq_gemm_kernel(
    x_ptr,
    qweight_ptr,
    qzeros_ptr,
    scales_ptr,
    out_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_om,
    stride_os,
    group_size,
    k_per_split,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    DOT_PRECISION: tl.constexpr,
):
    """out[split] = x[:, ks] @ W[ks, :] over the split's K range (the whole of K when there is one split)."""
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    split = tl.program_id(2)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    m_mask = offs_m < M
    n_mask = offs_n < N
    packed_cols = N // 8
    # Every logical column reads its whole int32 and shifts its own nibble out (see the module table).
    col = offs_n % 8
    shifts = ((col // 2) + 4 * (col % 2)) * 4
    words = offs_n // 8

    acc = tl.zeros([BLOCK_M, BLOCK_N], tl.float32)
    k_start = split * k_per_split
    k_end = tl.minimum(k_start + k_per_split, K)
    # BLOCK_K divides group_size, so each K tile lies in one quantisation group.
    for k0 in range(k_start, k_end, BLOCK_K):
        ks = k0 + offs_k
        x = tl.load(x_ptr + offs_m[:, None] * stride_xm + ks[None, :], mask=m_mask[:, None], other=0.0)
        q = tl.load(qweight_ptr + ks[:, None] * packed_cols + words[None, :], mask=n_mask[None, :], other=0)
        group = k0 // group_size
        z = tl.load(qzeros_ptr + group * packed_cols + words, mask=n_mask, other=0)
        s = tl.load(scales_ptr + group * N + offs_n, mask=n_mask, other=0.0).to(tl.float32)
        q = (q >> shifts[None, :]) & 0xF
        z = (z >> shifts) & 0xF
        w = ((q - z[None, :]).to(tl.float32) * s[None, :]).to(x.dtype)
        acc = tl.dot(x.to(DOT_DTYPE), w.to(DOT_DTYPE), acc, input_precision=DOT_PRECISION)

    out_offs = split * stride_os + offs_m[:, None] * stride_om + offs_n[None, :]
    tl.store(out_ptr + out_offs, acc, mask=m_mask[:, None] & n_mask[None, :])


def _config(M: int, N: int, K: int, group_size: int, device: torch.device) -> tuple[int, int, int, int]:
    """(BLOCK_M, BLOCK_N, BLOCK_K, num_splits).

    Decode (M <= 16): one M tile, so the grid is only N / BLOCK_N wide; split K until ~2 waves of
    programs stream the weight. Prefill: large output tiles, no split.
    """
    block_k = min(group_size, 64 if M <= _SMALL_M else 32)
    if M <= _SMALL_M:
        block_n = 64
        tiles = triton.cdiv(N, block_n)
        splits = max(1, min(triton.cdiv(2 * num_sms(device), tiles), K // block_k, 16))
        return 16, block_n, block_k, splits
    block_m = 64 if M <= 64 else 128
    return block_m, 128, block_k, 1


def awq_gemm(x, qweight, qzeros, scales, group_size: int) -> torch.Tensor:
    """x [M, K] fp16/bf16 -> x @ dequantised W, [M, N] in x's dtype."""
    M, K = x.shape
    N = qweight.shape[1] * 8
    assert K % group_size == 0 and qweight.shape[0] == K and x.stride(-1) == 1
    assert qweight.is_contiguous() and qzeros.is_contiguous() and scales.is_contiguous()
    if M == 0:
        return torch.empty((0, N), dtype=x.dtype, device=x.device)
    block_m, block_n, block_k, splits = _config(M, N, K, group_size, x.device)
    assert group_size % block_k == 0, "a K tile must not straddle two quantisation groups"
    k_per_split = triton.cdiv(triton.cdiv(K, splits), block_k) * block_k
    splits = triton.cdiv(K, k_per_split)
    if splits == 1:
        out = torch.empty((M, N), dtype=x.dtype, device=x.device)
    else:  # fp32 partial sums, one slice per split, added up below
        out = torch.empty((splits, M, N), dtype=torch.float32, device=x.device)
    dot_dtype, dot_precision = dot_operands(x.dtype)
    grid = (triton.cdiv(M, block_m), triton.cdiv(N, block_n), splits)
    _awq_gemm_kernel[grid](
        x,
        qweight,
        qzeros,
        scales,
        out,
        M,
        N,
        K,
        x.stride(0),
        out.stride(-2),
        out.stride(0) if splits > 1 else 0,
        group_size,
        k_per_split,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        DOT_DTYPE=dot_dtype,
        DOT_PRECISION=dot_precision,
        num_warps=4 if block_m * block_n <= 64 * 128 else 8,
    )
    return out if splits == 1 else out.sum(0).to(x.dtype)


def _pack_int4(values: torch.Tensor) -> torch.Tensor:
    """[R, N] ints in 0..15 -> [R, N // 8] int32, column AWQ_ORDER[i] in nibble i."""
    rows, cols = values.shape
    assert cols % 8 == 0
    nibbles = values.long().view(rows, cols // 8, 8)[..., list(AWQ_ORDER)]
    shifts = torch.arange(0, 32, 4, device=values.device)
    words = (nibbles << shifts).sum(-1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def _unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of _pack_int4: [R, N // 8] int32 -> [R, N] int32 in 0..15."""
    shifts = torch.tensor(AWQ_REVERSE_ORDER, device=packed.device, dtype=torch.int32) * 4
    return ((packed[..., None] >> shifts) & 0xF).flatten(-2)


def awq_pack(intweight: torch.Tensor, zeros: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """intweight [K, N], zeros [K // group_size, N], ints in 0..15 -> (qweight, qzeros) in AutoAWQ layout."""
    return _pack_int4(intweight), _pack_int4(zeros)


def _dequantize(qweight, qzeros, scales, group_size: int, dtype: torch.dtype) -> torch.Tensor:
    q = _unpack_int4(qweight)
    z = _unpack_int4(qzeros).repeat_interleave(group_size, dim=0)
    s = scales.float().repeat_interleave(group_size, dim=0)
    # (q - z) * s is exact in fp32, so a single rounding to `dtype` follows.
    return ((q - z).float() * s).to(dtype)


def awq_dequantize_ref(qweight, qzeros, scales, group_size: int) -> torch.Tensor:
    """W [K, N] in the scales' dtype."""
    return _dequantize(qweight, qzeros, scales, group_size, scales.dtype)


def awq_gemm_ref(x, qweight, qzeros, scales, group_size: int) -> torch.Tensor:
    return x @ _dequantize(qweight, qzeros, scales, group_size, x.dtype)
