"""Activation-aware weight quantization (AWQ, Lin et al. 2023) of a Llama-family model, as AutoAWQ does it.

Decoder layer by decoder layer, on the fp32 inputs that calibration text gives it (transformers' modules run the
layer; its output, unquantized, is the next layer's input):

    1. record the input statistics of each group of linears that share an input (see search.py)
    2. per group, search per-input-channel scales s (mean|x|^alpha over a grid of alpha, see search.py);
       multiply the linears' input channels by s and fold 1/s into the op before them:
           input_layernorm           -> q_proj | k_proj | v_proj
           v_proj (rows)             -> o_proj          only when v's outputs are o's inputs (no GQA)
           post_attention_layernorm  -> gate_proj | up_proj
           up_proj (rows)            -> down_proj       (act(gate) * up / s = (act(gate) * up) / s)
    3. per linear except q and k, search per-group clipping of the scaled weight
    4. quantize to int4 with a zero point per group

Round-to-nearest (`activation_aware=False`) skips 1-3 and needs no calibration.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from torch import nn

from engine import assets
from engine.quant.calibration import LayerInputs, calibration_windows, first_layer_inputs, read_text
from engine.quant.checkpoint import save_awq_checkpoint, staged_output
from engine.quant.int4 import Int4Weight, choose_group_size, quantize_int4
from engine.quant.search import InputStats, clip, search_clip, search_scales
from engine.tokenizer import Tokenizer

LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)
# Errors in q and k pass through softmax(q k^T); AutoAWQ leaves them unclipped.
UNCLIPPED = ("self_attn.q_proj", "self_attn.k_proj")


@dataclass(frozen=True)
class ScalingGroup:
    prev: str  # the op whose output the linears share: 1/s is folded into it
    linears: tuple[str, ...]


SCALING_GROUPS = (
    ScalingGroup("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    ScalingGroup("self_attn.v_proj", ("self_attn.o_proj",)),
    ScalingGroup("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    ScalingGroup("mlp.up_proj", ("mlp.down_proj",)),
)
# linear -> the linear whose recorded input it shares
INPUT_OF = {name: group.linears[0] for group in SCALING_GROUPS for name in group.linears}


@dataclass(frozen=True)
class QuantizeResult:
    path: Path
    group_size: int
    seconds: float


def quantize_model(
    model: str | Path,
    out: str | Path,
    *,
    group_size: int = 128,
    calib_path: Path | None = None,
    activation_aware: bool = True,
    num_samples: int = 32,
    seq_len: int = 256,
    num_grid: int = 20,
    console: Console | None = None,
) -> QuantizeResult:
    """Quantize a Hugging Face model directory (or a model alias) into an AutoAWQ GEMM checkpoint at `out`.

    Runs on the CPU in fp32. The searches are many small tensor ops: on a host whose cores are busy with other
    work, OMP_NUM_THREADS=1 is several times faster than contending for them.
    """
    import transformers  # heavy: only when quantizing

    start = time.perf_counter()
    console = console or Console(stderr=True)
    source = assets.resolve(str(model))
    out = Path(out)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    hf_model.requires_grad_(False)
    layers = hf_model.model.layers
    group_size = _group_size(layers, group_size, console)
    method = "AWQ" if activation_aware else "round-to-nearest"
    console.print(f"{method} int4 of {source} ({len(layers)} layers, group size {group_size})")
    with staged_output(out) as staging:
        inputs = None
        if activation_aware:
            text = read_text(calib_path)
            windows = calibration_windows(Tokenizer.from_dir(source), text, num_samples, seq_len)
            console.print(f"calibration: {windows.shape[0]} windows of {windows.shape[1]} tokens")
            inputs = first_layer_inputs(hf_model, windows, batch_size=8)
        with _progress(console) as progress:
            quantized = _quantize_layers(layers, inputs, group_size, num_grid, progress)
        save_awq_checkpoint(hf_model, quantized, source, staging, group_size)
    seconds = time.perf_counter() - start
    console.print(f"wrote {out} in {seconds:.0f} s")
    return QuantizeResult(out, group_size, seconds)


def _quantize_layers(
    layers: nn.ModuleList, inputs: LayerInputs | None, group_size: int, num_grid: int, progress: Progress
) -> dict[str, Int4Weight]:
    """Full linear name -> int4 weight; AWQ when there are calibration inputs, round-to-nearest otherwise."""
    quantized = {}
    task = progress.add_task("", total=len(layers))
    for i, layer in enumerate(layers):

        def show(phase: str, i=i) -> None:
            progress.update(task, description=f"layer {i + 1}/{len(layers)}: {phase}")

        if inputs is None:
            layer_weights = quantize_layer_rtn(layer, group_size)
        else:
            show("calibrate")
            stats, inputs = calibrate(layer, inputs)
            show("search scales")
            scale_layer(layer, stats, group_size, num_grid)
            show("clip and quantize")
            layer_weights = clip_and_quantize(layer, stats, group_size, num_grid)
        quantized.update({f"model.layers.{i}.{name}": q for name, q in layer_weights.items()})
        progress.advance(task)
    progress.update(task, description=f"{len(layers)} layers")
    return quantized


@torch.inference_mode()
def scale_layer(
    layer: nn.Module, stats: dict[str, InputStats], group_size: int, num_grid: int = 20
) -> dict[str, torch.Tensor]:
    """Search and fold each group's scales, keyed by the group's `prev`.

    The layer computes the same function; `stats` now describe x / s.
    """
    modules = dict(layer.named_modules())
    folded = {}
    for group in SCALING_GROUPS:
        prev, linears = modules[group.prev], [modules[name] for name in group.linears]
        if not _foldable(prev, linears[0]):
            continue
        key = group.linears[0]
        scales, _ = search_scales([lin.weight for lin in linears], stats[key], group_size, num_grid)
        apply_scales(prev, linears, scales)
        stats[key] = stats[key].rescaled(scales)
        folded[group.prev] = scales
    return folded


@torch.inference_mode()
def clip_and_quantize(
    layer: nn.Module, stats: dict[str, InputStats], group_size: int, num_grid: int = 20
) -> dict[str, Int4Weight]:
    modules = dict(layer.named_modules())
    quantized = {}
    for name in LINEARS:
        weight = modules[name].weight
        if name not in UNCLIPPED:
            max_val = search_clip(weight, stats[INPUT_OF[name]].second_moment, group_size, num_grid)
            weight.copy_(clip(weight, max_val))
        quantized[name] = quantize_int4(weight, group_size)
    return quantized


def quantize_layer_rtn(layer: nn.Module, group_size: int) -> dict[str, Int4Weight]:
    modules = dict(layer.named_modules())
    return {name: quantize_int4(modules[name].weight, group_size) for name in LINEARS}


@torch.inference_mode()
def calibrate(layer: nn.Module, inputs: LayerInputs) -> tuple[dict[str, InputStats], LayerInputs]:
    """Run the layer over the calibration inputs: the input statistics of each scaling group, and its outputs."""
    modules = dict(layer.named_modules())
    stats = {key: InputStats.zeros(modules[key].in_features) for key in set(INPUT_OF.values())}
    hooks = [modules[key].register_forward_pre_hook(partial(_record, s)) for key, s in stats.items()]
    try:
        hidden = [_hidden(layer(h, **kw)) for h, kw in zip(inputs.hidden, inputs.kwargs, strict=True)]
    finally:
        for hook in hooks:
            hook.remove()
    return stats, LayerInputs(hidden, inputs.kwargs)


def apply_scales(prev: nn.Module, linears: list[nn.Linear], scales: torch.Tensor) -> None:
    """linear(x) -> linear'(x / s) with linear' = linear * s on input channels; prev's output divided by s."""
    if isinstance(prev, nn.Linear):
        prev.weight.div_(scales[:, None])
        if prev.bias is not None:
            prev.bias.div_(scales)
    else:  # RMSNorm: weight * x / rms(x)
        prev.weight.div_(scales)
    for linear in linears:
        linear.weight.mul_(scales)


def _foldable(prev: nn.Module, first: nn.Linear) -> bool:
    return not isinstance(prev, nn.Linear) or prev.out_features == first.in_features


def _record(stats: InputStats, _module, args) -> None:
    stats.update(args[0])


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output  # transformers 4.x returns a tuple


def _group_size(layers: nn.ModuleList, requested: int, console: Console) -> int:
    modules = dict(layers[0].named_modules())
    linears = [modules[name] for name in LINEARS]
    if any(lin.out_features % 8 for lin in linears):
        raise ValueError("AWQ packs 8 output columns per int32: every out_features must be a multiple of 8")
    chosen = choose_group_size(requested, [lin.in_features for lin in linears])
    if chosen != requested:
        sizes = sorted({lin.in_features for lin in linears})
        console.print(f"[yellow]group size {requested} does not divide every in_features {sizes}: using {chosen}")
    return chosen


def _progress(console: Console) -> Progress:
    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    )
