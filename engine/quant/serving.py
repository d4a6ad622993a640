"""How the linears of a loaded model are served on the CPU: int8 made at load, int4 from the checkpoint, or
dense weights prepacked for oneDNN.

    quantization   weights read per decode step (SmolLM2-135M)   kernel
    none           fp32 ~540 MB, bf16 ~270 MB                   oneDNN (prepacked)
    int8           ~135 MB (lm_head too)                        kernels/cpu/quant_linear.c
    int4 | awq     ~75 MB + lm_head in int8                     kernels/cpu/quant_linear.c

int4 needs an int4 checkpoint: an AWQ one (ours or AutoAWQ's), or for a bundled model its int4 variant, which
`flowgate models pull` makes from the GGUF's own 4-bit blocks (engine/assets.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from engine import assets
from engine.config import EngineConfig
from engine.models.layers import Linear, can_pack_linears


def weights_dir(config: EngineConfig, model_dir: Path) -> Path:
    """The directory whose weights serve `config`: the bundled model's int4 variant for int4, else model_dir."""
    if config.quantization in ("int4", "awq") and not _is_quantized(model_dir):
        bundled = {(assets.cache_root() / "models" / alias).resolve(): alias for alias in assets.BUNDLED_MODELS}
        if model_dir.resolve() in bundled:
            return assets.pull_int4(bundled[model_dir.resolve()])
        raise ValueError(
            f"quantization={config.quantization} needs an int4 checkpoint; {model_dir} has dense weights "
            "(make one with `flowgate quantize awq`)"
        )
    return model_dir


def serving_dtype(config: EngineConfig, weights: Path, device: torch.device) -> str:
    """config.dtype, except that `auto` on the CPU is float32 for int8 and int4 weights: the kernels' dtype."""
    if config.dtype == "auto" and device.type == "cpu" and (config.quantization == "int8" or _is_quantized(weights)):
        return "float32"
    return config.dtype


def prepare_linears(model: nn.Module, config: EngineConfig, device: torch.device, dtype: torch.dtype) -> None:
    """int8: every dense linear (lm_head included) quantized per output channel; int4 checkpoints keep lm_head
    dense in the checkpoint, so it gets int8 here too (it is a fifth of the model). Else oneDNN prepacking."""
    int_path = config.quantization == "int8" or (
        config.quantization in ("int4", "awq") and model.config.quantization_config is not None
    )
    if int_path:
        if device.type != "cpu" or dtype != torch.float32:
            raise ValueError(f"quantization={config.quantization} runs on the CPU in float32 (got {device}, {dtype})")
        for module in model.modules():
            if isinstance(module, Linear):
                module.quantize_int8()
    elif can_pack_linears(device, dtype):
        for module in model.modules():
            if isinstance(module, Linear):
                module.pack_for_cpu()


def _is_quantized(model_dir: Path) -> bool:
    import json

    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return config.get("quantization_config") is not None
