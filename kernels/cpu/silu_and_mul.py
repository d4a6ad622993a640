"""SwiGLU's silu(gate) * up on the CPU: the C kernel in silu_and_mul.c, called through ctypes."""

from __future__ import annotations

import ctypes
import functools

import torch
import torch.nn.functional as F

from kernels.cpu.build import load

_DTYPES = {torch.float32: 0, torch.bfloat16: 1}


def supports(gate_up: torch.Tensor) -> bool:
    return gate_up.device.type == "cpu" and gate_up.dtype in _DTYPES and load("silu_and_mul") is not None


@functools.cache
def _kernel():
    fn = load("silu_and_mul").silu_and_mul
    fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
    fn.restype = None
    return fn


def silu_and_mul_ref(gate_up: torch.Tensor) -> torch.Tensor:
    """[..., 2 * I] -> [..., I]: silu of the first half times the second, as the Llama MLP computes it."""
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """Same contract as silu_and_mul_ref, into a new contiguous tensor (check `supports` first)."""
    *lead, width = gate_up.shape
    assert width % 2 == 0, "gate|up must have an even last dimension"
    gate_up = gate_up.contiguous()
    out = gate_up.new_empty((*lead, width // 2))
    if out.numel():
        _kernel()(
            gate_up.data_ptr(), out.data_ptr(), gate_up.numel() // width, width // 2, _DTYPES[gate_up.dtype]
        )
    return out
