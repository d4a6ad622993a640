"""Write an AutoAWQ GEMM checkpoint: the layout published AWQ models (e.g. Qwen2.5-*-AWQ) use.

    model.layers.N.<proj>.qweight | .qzeros | .scales  (+ .bias in fp16)   unfused Hugging Face names
    everything else (embeddings, norms, lm_head)                          fp16
    config.json: quantization_config {quant_method: awq, bits: 4, group_size, zero_point: true, version: gemm}
    tokenizer and generation files copied from the source directory
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import save_file

from engine.quant.int4 import Int4Weight, to_awq_tensors

_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
_WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")


def quantization_config(group_size: int) -> dict:
    return {"quant_method": "awq", "bits": 4, "group_size": group_size, "zero_point": True, "version": "gemm"}


def save_awq_checkpoint(
    hf_model, quantized: dict[str, Int4Weight], source: Path, out: Path, group_size: int
) -> None:
    """`quantized` maps a linear's full name (model.layers.N.self_attn.q_proj) to its int4 weight."""
    tensors = {}
    for name, q in quantized.items():
        tensors.update({f"{name}.{key}": t for key, t in to_awq_tensors(q).items()})
    replaced = {f"{name}.weight" for name in quantized}
    if hf_model.get_output_embeddings().weight is hf_model.get_input_embeddings().weight:
        replaced.add("lm_head.weight")  # tied: stored once, as the embedding
    for name, tensor in hf_model.state_dict().items():
        if name not in replaced:
            tensors[name] = tensor.detach().half().contiguous()
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    _write_config(source, out, group_size)
    _copy_tokenizer_files(source, out)


def _write_config(source: Path, out: Path, group_size: int) -> None:
    config = json.loads((source / "config.json").read_text(encoding="utf-8"))
    config["quantization_config"] = quantization_config(group_size)
    config["torch_dtype"] = "float16"
    if "dtype" in config:  # transformers 5 writes this name, and it wins over torch_dtype
        config["dtype"] = "float16"
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _copy_tokenizer_files(source: Path, out: Path) -> None:
    for file in source.iterdir():
        weights = file.suffix in _WEIGHT_SUFFIXES or file.name in _WEIGHT_INDEXES
        if file.is_file() and not weights and file.name != "config.json":
            shutil.copy2(file, out / file.name)


@contextmanager
def staged_output(out: Path) -> Iterator[Path]:
    """A scratch directory beside `out`, renamed to `out` on success: `out` is never left half-written."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"{out} already exists and is not an empty directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}-"))
    try:
        yield staging
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
