"""The linear layer of AWQ checkpoints: int4 weights in AutoAWQ's GEMM layout (see kernels/awq_gemm.py).

    qweight [K, N // 8] int32    qzeros [K // g, N // 8] int32    scales [K // g, N] fp16    bias [N] model dtype

Fused layers (q|k|v, gate|up) concatenate their shards' packed columns: each shard's N is a multiple of 8, so
no int32 straddles two shards. On CUDA (or with FLOWGATE_KERNELS=triton) the Triton GEMM dequantizes in
registers. On CPU with fp32 activations the weight is repacked once after loading for the C int4 kernel
(kernels/cpu/quant_linear.c: offset = -zero * scale, so it multiplies by exactly the dequantized weight);
in other dtypes (or without a C compiler) it is dequantized into a dense [K, N] copy in the model dtype.
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from engine.kernel_path import use_triton
from kernels.awq_gemm import _unpack_int4, awq_dequantize_ref, awq_gemm
from kernels.cpu import build as cpu_build
from kernels.cpu import quant_linear as cpu_quant_linear

_SUPPORTED = {"bits": 4, "zero_point": True, "version": "gemm"}


def awq_linear_factory(quantization_config: dict):
    """(in_features, out_features, bias) -> AWQLinear, after checking the checkpoint is AutoAWQ GEMM int4."""
    for key, expected in _SUPPORTED.items():
        value = quantization_config.get(key, expected)
        if (value.lower() if isinstance(value, str) else value) != expected:
            raise ValueError(f"unsupported AWQ checkpoint: {key}={value!r} (supported: {_SUPPORTED})")
    if any(name != "lm_head" for name in quantization_config.get("modules_to_not_convert") or ()):
        raise ValueError("AWQ checkpoints with unquantized decoder layers (modules_to_not_convert) are unsupported")
    return functools.partial(AWQLinear, group_size=int(quantization_config["group_size"]))


class AWQLinear(nn.Module):
    fuse_dims = {"qweight": 1, "qzeros": 1, "scales": 1, "bias": 0}  # noqa: RUF012 - read-only class constant

    def __init__(self, in_features: int, out_features: int, bias: bool = False, *, group_size: int):
        super().__init__()
        if in_features % group_size or out_features % 8:
            raise ValueError(
                f"AWQ linear {in_features} -> {out_features}: in_features must be a multiple of the group size "
                f"{group_size} and out_features of 8"
            )
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        groups, words = in_features // group_size, out_features // 8
        self.qweight = _frozen(torch.empty(in_features, words, dtype=torch.int32))
        self.qzeros = _frozen(torch.empty(groups, words, dtype=torch.int32))
        self.scales = _frozen(torch.empty(groups, out_features, dtype=torch.float16))
        self.dtype = torch.get_default_dtype()  # the model's: the loader builds the model under it
        self.bias = _frozen(torch.empty(out_features)) if bias else None
        self.register_buffer("dense_weight", None, persistent=False)
        self.packed: cpu_quant_linear.PackedWeight | None = None

    def process_weights_after_loading(self) -> None:
        if self.qweight.is_cuda:
            return
        if self.dtype == torch.float32 and cpu_build.load("quant_linear") is not None:
            self.packed = self.pack_for_cpu()
        else:
            self.dense_weight = self.dequantize().to(self.dtype)

    def pack_for_cpu(self) -> cpu_quant_linear.PackedWeight:
        q = _unpack_int4(self.qweight).t()  # [N, K]
        zeros = _unpack_int4(self.qzeros).float()  # [K // g, N]
        scales = self.scales.float()
        return cpu_quant_linear.pack_int4(q, scales, -zeros * scales, self.group_size)

    def dequantize(self) -> torch.Tensor:
        """W [K, N] in fp32 ((q - z) * s is exact there)."""
        return awq_dequantize_ref(self.qweight, self.qzeros, self.scales.float(), self.group_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if use_triton(x):
            out = awq_gemm(flat, self.qweight, self.qzeros, self.scales, self.group_size)
        elif self.packed is not None:
            out = cpu_quant_linear.quant_linear(flat, self.packed)
        else:
            assert self.dense_weight is not None, "process_weights_after_loading() was not called"
            out = flat @ self.dense_weight
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*x.shape[:-1], self.out_features)


def _frozen(tensor: torch.Tensor) -> nn.Parameter:
    return nn.Parameter(tensor, requires_grad=False)
