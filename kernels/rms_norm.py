"""RMSNorm with Hugging Face LlamaRMSNorm semantics, optionally fused with the residual add.

s   = x + residual                       (in x's dtype, as the model adds them)
y   = (s.float() * rsqrt(mean(s.float()^2) + eps)).to(x.dtype) * weight
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _rms_norm_kernel(
    x_ptr,
    residual_ptr,
    weight_ptr,
    out_ptr,
    sum_ptr,
    stride_x,
    stride_r,
    stride_o,
    stride_s,
    hidden,
    eps,
    HAS_RESIDUAL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    mask = offs < hidden
    x = tl.load(x_ptr + row * stride_x + offs, mask=mask, other=0.0)
    if HAS_RESIDUAL:
        r = tl.load(residual_ptr + row * stride_r + offs, mask=mask, other=0.0)
        # Round the sum to x's dtype before normalising it, exactly as the unfused model does.
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(sum_ptr + row * stride_s + offs, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, 0) / hidden + eps)
    normed = (xf * rstd).to(x.dtype).to(tl.float32)
    w = tl.load(weight_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_o + offs, normed * w, mask=mask)


def rms_norm(x, weight, eps: float, residual=None):
    """x [N, H] -> normed x, or with residual -> (normed(x + residual), x + residual)."""
    num_rows, hidden = x.shape
    assert x.stride(-1) == 1 and weight.is_contiguous()
    out = torch.empty_like(x, dtype=torch.promote_types(x.dtype, weight.dtype))
    summed = torch.empty_like(x) if residual is not None else x
    if num_rows:
        _rms_norm_kernel[(num_rows,)](
            x,
            residual if residual is not None else x,
            weight,
            out,
            summed,
            x.stride(0),
            residual.stride(0) if residual is not None else 0,
            out.stride(0),
            summed.stride(0),
            hidden,
            eps,
            HAS_RESIDUAL=residual is not None,
            BLOCK=triton.next_power_of_2(hidden),
            num_warps=min(16, max(1, triton.next_power_of_2(hidden) // 512)),
        )
    return out if residual is None else (out, summed)


def _llama_rms_norm(x, weight, eps: float):
    xf = x.float()
    variance = xf.pow(2).mean(-1, keepdim=True)
    return weight * (xf * torch.rsqrt(variance + eps)).to(x.dtype)


def rms_norm_ref(x, weight, eps: float, residual=None):
    if residual is None:
        return _llama_rms_norm(x, weight, eps)
    summed = x + residual
    return _llama_rms_norm(summed, weight, eps), summed
