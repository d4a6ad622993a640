"""`dtype=auto` on the CPU: the dtype whose matmuls this CPU actually runs faster, measured once and cached.

A CPU flag is not enough: AVX512-BF16 is there on AMD Zen 4, yet oneDNN's bf16 linears there ran 3.7x slower
than fp32 at 32 streams (no AMX tiles; the bf16 path converts more than it saves). With AMX (Sapphire Rapids
and later) bf16 is the fast path, so it is chosen without measuring. Otherwise prepacked linears of the
bundled model's shapes are timed in fp32 and bf16 at batch 1 and 32, alternating, medians; bf16 must be
clearly faster (BF16_MARGIN) to win, since fp32 also keeps a seeded request's output independent of what
else shares its batch. The verdict is cached per CPU model and flags in $FLOWGATE_HOME/cpu-dtype/.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import time

import torch

from engine import assets

log = logging.getLogger(__name__)
BF16_MARGIN = 0.75  # bf16 wins when its time is under 75% of fp32's
_SHAPES = ((576, 1536), (1536, 576))  # (in, out) of SmolLM2's MLP: typical of the small models served on CPU
_BATCHES = (1, 32)
_ROUNDS = 7


def cpu_auto_dtype() -> torch.dtype:
    flags = _cpu_flags()
    if "amx_bf16" in flags:
        return torch.bfloat16
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.float32
    path = assets.cache_root() / "cpu-dtype" / f"{_cpu_key(flags)}.json"
    try:
        return _DTYPES[json.loads(path.read_text())["dtype"]]
    except (OSError, ValueError, KeyError):
        pass
    fp32, bf16 = measure()
    choice = "bfloat16" if bf16 < BF16_MARGIN * fp32 else "float32"
    log.info("dtype auto: fp32 %.2f ms, bf16 %.2f ms per round -> %s (cached in %s)", fp32, bf16, choice, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{id(path)}.tmp")
    tmp.write_text(json.dumps({"dtype": choice, "fp32_ms": fp32, "bf16_ms": bf16}))
    tmp.replace(path)
    return _DTYPES[choice]


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def measure() -> tuple[float, float]:
    """Median milliseconds of one round (every shape at every batch) in fp32 and in bf16."""
    gen = torch.Generator().manual_seed(0)
    cases = {}
    for dtype in (torch.float32, torch.bfloat16):
        weights = [torch.randn(n, k, generator=gen).to(dtype) for k, n in _SHAPES]
        packed = [torch.ops.mkldnn._reorder_linear_weight(w, None) for w in weights]
        inputs = [[torch.randn(m, k, generator=gen).to(dtype) for k, _ in _SHAPES] for m in _BATCHES]
        cases[dtype] = (packed, inputs)
    times = {dtype: [] for dtype in cases}
    with torch.inference_mode():
        for _ in range(_ROUNDS + 1):  # the first round warms up both
            for dtype, (packed, inputs) in cases.items():
                start = time.perf_counter()
                for xs in inputs:
                    for x, w in zip(xs, packed, strict=True):
                        torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")
                times[dtype].append((time.perf_counter() - start) * 1000)
    return tuple(statistics.median(times[d][1:]) for d in (torch.float32, torch.bfloat16))


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def _cpu_key(flags: set[str]) -> str:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    return hashlib.sha256((model + " ".join(sorted(flags)) + torch.__version__).encode()).hexdigest()[:16]
