"""Build a model from a Hugging Face directory: config.json plus safetensors (single or sharded), or
pytorch_model.bin as a fallback.

Checkpoint names are Hugging Face's; ours differ only where layers are fused:

    ours                                   checkpoint
    ...self_attn.qkv_proj.<param>          ...self_attn.{q,k,v}_proj.<param>   stacked along fuse_dims[param]
    ...mlp.gate_up_proj.<param>            ...mlp.{gate,up}_proj.<param>
    everything else                        the same name
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open

from engine.models.config import ModelConfig
from engine.models.llama import LlamaForCausalLM

_FUSED_SOURCES = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)  # a buffer some older checkpoints saved

TensorGetter = Callable[[], torch.Tensor]


def load_model(
    path: str | Path, dtype: torch.dtype, device: str | torch.device
) -> tuple[LlamaForCausalLM, ModelConfig]:
    path = Path(path)
    config = ModelConfig.from_pretrained(path)
    with torch.device(device), _default_dtype(dtype):
        model = LlamaForCausalLM(config)
    with _one_thread():
        load_weights(model, checkpoint_tensors(path))
    for module in model.modules():  # layers that derive state from what was loaded (AWQ's CPU weight)
        if hasattr(module, "process_weights_after_loading"):
            module.process_weights_after_loading()
    return model.eval(), config


def load_weights(model: LlamaForCausalLM, checkpoint: dict[str, TensorGetter]) -> None:
    """Copy every parameter from the checkpoint (stacking fused shards); every checkpoint tensor must be used."""
    modules = dict(model.named_modules())
    used = set()
    for name, param in model.named_parameters():  # a tied lm_head shares embed_tokens' parameter: seen once
        module_name, leaf = name.rsplit(".", 1)
        parent, _, layer = module_name.rpartition(".")
        if layer in _FUSED_SOURCES:
            sources = [f"{parent}.{source}.{leaf}" for source in _FUSED_SOURCES[layer]]
            dim = modules[module_name].fuse_dims[leaf]
        else:
            sources, dim = [name], 0
        _copy_shards(param.data, [_get(checkpoint, s) for s in sources], dim, name)
        used.update(sources)
    if model.config.tie_word_embeddings:
        used.add("lm_head.weight")  # some tied checkpoints store the copy anyway
    unused = sorted(n for n in set(checkpoint) - used if not n.endswith(_IGNORED_SUFFIXES))
    if unused:
        raise ValueError(
            f"checkpoint tensors the model does not use: {unused[:8]}{' ...' if len(unused) > 8 else ''}"
        )


def _copy_shards(dst: torch.Tensor, shards: list[torch.Tensor], dim: int, name: str) -> None:
    """Each shard straight into its slice of `dst` along `dim`: no concatenated copy in between."""
    sizes = [shard.shape[dim] for shard in shards]
    fits = sum(sizes) == dst.shape[dim]
    if not fits or any(t.shape != s.shape for t, s in zip(dst.split(sizes, dim), shards, strict=True)):
        shapes = [tuple(shard.shape) for shard in shards]
        raise ValueError(f"{name}: checkpoint shapes {shapes} do not fit the model's {tuple(dst.shape)}")
    for target, shard in zip(dst.split(sizes, dim), shards, strict=True):
        target.copy_(shard)


def checkpoint_tensors(path: Path) -> dict[str, TensorGetter]:
    """name -> a function reading that tensor, over every weight file of the directory (memory-mapped)."""
    getters = {}
    for file in _weight_files(path):
        if file.suffix == ".safetensors":
            handle = safe_open(file, framework="pt")
            getters.update({name: partial(handle.get_tensor, name) for name in handle.keys()})  # noqa: SIM118
        else:
            state = torch.load(file, map_location="cpu", mmap=True, weights_only=True)
            getters.update({name: partial(_identity, tensor) for name, tensor in state.items()})
    return getters


def _weight_files(path: Path) -> list[Path]:
    for single, index in (
        ("model.safetensors", "model.safetensors.index.json"),
        ("pytorch_model.bin", "pytorch_model.bin.index.json"),
    ):
        if (path / single).is_file():
            return [path / single]
        if (path / index).is_file():
            weight_map = json.loads((path / index).read_text(encoding="utf-8"))["weight_map"]
            return [path / name for name in sorted(set(weight_map.values()))]
    raise FileNotFoundError(f"no model.safetensors or pytorch_model.bin (or their index) in {path}")


def _get(checkpoint: dict[str, TensorGetter], name: str) -> torch.Tensor:
    if name not in checkpoint:
        raise ValueError(f"checkpoint has no tensor {name!r}")
    return checkpoint[name]()


def _identity(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Weight copies are bound by page faults; extra intra-op threads only contend (2-4x slower on a busy host)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
