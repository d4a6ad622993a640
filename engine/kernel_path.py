"""Which implementation of an op runs: the Triton kernel on CUDA; on CPU the C kernel where it builds, else the
torch reference.

FLOWGATE_KERNELS=triton forces the Triton kernels on CPU as well (run them with TRITON_INTERPRET=1):
that is how the CUDA code path is tested on machines without a GPU.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from types import ModuleType

import torch


def use_triton(t: torch.Tensor) -> bool:
    return t.is_cuda or os.environ.get("FLOWGATE_KERNELS") == "triton"


def pick(
    t: torch.Tensor, *, triton: Callable | None, cpu: ModuleType, name: str, reference: Callable
) -> Callable:
    """The op to run on `t`: `triton` (None: there is no Triton kernel), else `cpu.<name>` (a kernels.cpu module)
    when `cpu.supports(t)`, else `reference`."""
    if use_triton(t):
        return triton or reference
    return getattr(cpu, name) if cpu.supports(t) else reference
