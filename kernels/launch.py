"""What the launchers share: the dtype fed to tl.dot and the GPU's size."""

from __future__ import annotations

import functools
import os

import torch
import triton.language as tl

_TL_DTYPES = {torch.float16: tl.float16, torch.bfloat16: tl.bfloat16, torch.float32: tl.float32}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


def dot_operands(dtype: torch.dtype) -> tuple[tl.dtype, str]:
    """(operand dtype, input_precision) for tl.dot on tensors of `dtype`.

    fp32 uses "ieee" so it is exact rather than TF32. The interpreter's tl.dot multiplies bf16 bit
    patterns (triton-lang/triton#11584), so there bf16 operands are widened to fp32.
    """
    if dtype == torch.bfloat16 and interpreting():
        return tl.float32, "ieee"
    return _TL_DTYPES[dtype], "ieee" if dtype == torch.float32 else "tf32"


@functools.cache
def _cuda_sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def num_sms(device: torch.device) -> int:
    """Streaming multiprocessors to fill; a small stand-in off-GPU so heuristics stay exercised."""
    if device.type != "cuda":
        return 4
    return _cuda_sm_count(device.index if device.index is not None else torch.cuda.current_device())
