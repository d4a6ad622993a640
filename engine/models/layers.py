"""Layers of the Llama family: a pluggable linear, embedding, RMSNorm, rotary embedding.

Parameters are created with `torch.empty` (no random init): the loader overwrites every one, and the model is
built under the target device and dtype (see loader.py). On CUDA the Triton kernels run; on CPU the C kernels
(kernels.cpu) where they build, else the torch references.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from engine.kernel_path import pick
from engine.models.awq import awq_linear_factory
from engine.models.int4 import GGUFInt4Linear, quantized_linear
from kernels.cpu import quant_linear as cpu_quant_linear
from kernels.cpu import rms_norm as cpu_rms_norm
from kernels.cpu import rotary as cpu_rotary
from kernels.rms_norm import rms_norm, rms_norm_ref
from kernels.rotary import apply_rotary, apply_rotary_ref, rope_cos_sin_cache, rope_inv_freq

INT8_GROUP_SIZE = 32
# (in_features, out_features, bias) -> a module mapping [..., in_features] to [..., out_features]
LinearFactory = Callable[[int, int, bool], nn.Module]


class Linear(nn.Module):
    """y = x W^T + b, W stored [out_features, in_features] as in Hugging Face checkpoints.

    `fuse_dims` names, for each parameter, the dimension along which the shards of a fused layer
    (q|k|v, gate|up) are concatenated at load time; a quantized linear declares its own.
    """

    fuse_dims = {"weight": 0, "bias": 0}  # noqa: RUF012 - read-only class constant

    def __init__(self, in_features: int, out_features: int, bias: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, in_features), requires_grad=False)
        self.bias = nn.Parameter(torch.empty(out_features), requires_grad=False) if bias else None
        self.packed_weight: torch.Tensor | None = None
        self.int8_weight: cpu_quant_linear.PackedWeight | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.int8_weight is not None:
            return quantized_linear(x, self.int8_weight, self.bias)
        if self.packed_weight is not None:
            return torch.ops.mkldnn._linear_pointwise(x, self.packed_weight, self.bias, "none", [], "")
        return F.linear(x, self.weight, self.bias)

    def pack_for_cpu(self) -> None:
        """Reorder the weight once into oneDNN's blocked layout. F.linear on CPU reorders it on every call:
        packed, a bf16 decode step of the bundled model at batch 64 takes 136 ms instead of 155. The plain
        weight is dropped (a tied embedding keeps its own reference), so weights are not held twice."""
        self.packed_weight = torch.ops.mkldnn._reorder_linear_weight(self.weight, None)
        self.weight = None

    def quantize_int8(self) -> None:
        """Weight-only int8 for the CPU kernel (fp32 activations): ~0.28 of the bytes each decode step streams.
        One scale per output channel and 32 input channels (Q8_0's rule: per channel alone cost 6 of 8 greedy
        continuations of the bundled model; Q8_0 weights come back exactly). The plain weight is dropped."""
        self.int8_weight = cpu_quant_linear.quantize_int8(self.weight, INT8_GROUP_SIZE)
        self.weight = None


def can_pack_linears(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return False
    return dtype == torch.float32 or (
        dtype == torch.bfloat16 and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def linear_factory(quantization_config: dict | None) -> LinearFactory:
    """The linear layer class for a checkpoint's `quantization_config` (None: dense weights)."""
    if quantization_config is None:
        return Linear
    if quantization_config.get("quant_method") == "awq":
        return awq_linear_factory(quantization_config)
    if quantization_config.get("quant_method") == "gguf_q4_1":
        return functools.partial(GGUFInt4Linear, group_size=int(quantization_config["group_size"]))
    raise ValueError(f"unsupported quantization method {quantization_config.get('quant_method')!r}")


class Embedding(nn.Module):
    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_embeddings, embedding_dim), requires_grad=False)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(input_ids, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, hidden_size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(hidden_size), requires_grad=False)
        self.eps = eps

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        """normed x, or with a residual: (normed(x + residual), x + residual)."""
        op = pick(x, triton=rms_norm, cpu=cpu_rms_norm, name="rms_norm", reference=rms_norm_ref)
        return op(x, self.weight, self.eps, residual)


class RotaryEmbedding(nn.Module):
    """cos|sin for every position up to max_position, computed once in fp32; shared by all layers."""

    def __init__(self, head_dim: int, max_position: int, base: float, scaling: dict | None):
        super().__init__()
        inv_freq = rope_inv_freq(head_dim, base, scaling)
        cache = rope_cos_sin_cache(inv_freq, max_position, torch.float32)
        self.register_buffer("cos_sin_cache", cache, persistent=False)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        """q [T, Hq, D], k [T, Hkv, D] -> rotated (q, k). The kernels rotate q and k in place, the torch reference
        returns new tensors: use the returned pair, and count on q and k themselves neither being kept nor rotated."""
        op = pick(q, triton=apply_rotary, cpu=cpu_rotary, name="apply_rotary", reference=apply_rotary_ref)
        return op(q, k, positions, self.cos_sin_cache)
