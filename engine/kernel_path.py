"""Which implementation of an op runs: the Triton kernel on CUDA, its torch reference elsewhere.

FLOWGATE_KERNELS=triton forces the Triton kernels on CPU as well (run them with TRITON_INTERPRET=1):
that is how the CUDA code path is tested on machines without a GPU.
"""

from __future__ import annotations

import os

import torch


def use_triton(t: torch.Tensor) -> bool:
    return t.is_cuda or os.environ.get("FLOWGATE_KERNELS") == "triton"
