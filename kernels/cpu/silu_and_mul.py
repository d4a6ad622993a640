"""SwiGLU's silu(gate) * up on the CPU: the C kernel in silu_and_mul.c, called through ctypes."""

from __future__ import annotations

import ctypes

import torch
import torch.nn.functional as F

from kernels.cpu import build


def supports(gate_up: torch.Tensor) -> bool:
    return build.supports("silu_and_mul", gate_up)


def _kernel():
    return build.function(
        "silu_and_mul", (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int)
    )


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
            gate_up.data_ptr(),
            out.data_ptr(),
            gate_up.numel() // width,
            width // 2,
            build.DTYPE_FLAGS[gate_up.dtype],
        )
    return out
