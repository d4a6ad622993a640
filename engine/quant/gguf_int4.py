"""The int4 variant of a bundled GGUF model: its Q4_1 linears kept as 4-bit blocks instead of dequantized.

Q4_1 stores each run of 32 weights of a row as fp16 d and m and 32 nibbles q, meaning w = d * q + m. Kept as is,
the int4 model multiplies by exactly the weights of the fp32 conversion (gguf_convert.py dequantizes with the
same single rounding), at an eighth of the bytes. On disk, per linear (Hugging Face names, unfused):

    <linear>.qweight  uint8 [N, K / 2]   byte j: q of column 2j (low nibble), 2j + 1 (high nibble)
    <linear>.scales   fp16  [N, K / 32]  d
    <linear>.offsets  fp16  [N, K / 32]  m
    config.json quantization_config: {"quant_method": "gguf_q4_1", "bits": 4, "group_size": 32}

Everything else (embeddings, norms) is written as gguf_convert writes it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, GGUFReader, dequantize
from safetensors.numpy import save_file

from engine import gguf_convert as gc

QUANT_METHOD = "gguf_q4_1"
GROUP_SIZE = 32
_BLOCK_BYTES = 20  # fp16 d, fp16 m, 16 bytes of nibbles


def convert_int4(gguf_path: Path, out_dir: Path) -> None:
    reader = GGUFReader(gguf_path)
    meta = {key: field.contents() for key, field in reader.fields.items()}
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    config = gc.hf_config(meta, tie_word_embeddings=not has_output)
    config["quantization_config"] = {"quant_method": QUANT_METHOD, "bits": 4, "group_size": GROUP_SIZE}
    heads = {"attn_q.weight": config["num_attention_heads"], "attn_k.weight": config["num_key_value_heads"]}
    tensors = {}
    for tensor in reader.tensors:
        name = gc._hf_name(tensor.name)
        suffix = tensor.name.split(".", 2)[-1]
        if tensor.name.startswith("blk.") and name.endswith("_proj.weight"):
            if tensor.tensor_type != GGMLQuantizationType.Q4_1:
                raise ValueError(f"{tensor.name} is {tensor.tensor_type.name}, not Q4_1: no int4 variant")
            parts = q4_1_parts(np.asarray(tensor.data))
            if suffix in heads:
                parts = {key: gc.unpermute_qk(value, heads[suffix]) for key, value in parts.items()}
            prefix = name.removesuffix(".weight")
            tensors.update({f"{prefix}.{key}": np.ascontiguousarray(value) for key, value in parts.items()})
        else:
            weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
            tensors[name] = np.ascontiguousarray(weight)
    out_dir.mkdir(parents=True)
    save_file(tensors, str(out_dir / "model.safetensors"), {"format": "pt"})
    gc._write_json(out_dir / "config.json", config)
    gc._write_json(out_dir / "generation_config.json", gc._generation_config(meta))
    tokenizer, tokenizer_config = gc.hf_tokenizer(meta)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    gc._write_json(out_dir / "tokenizer_config.json", tokenizer_config)


def q4_1_parts(blocks: np.ndarray) -> dict[str, np.ndarray]:
    """Raw Q4_1 rows [N, K / 32 * 20] bytes -> qweight [N, K / 2], scales and offsets [N, K / 32] (fp16)."""
    rows = blocks.shape[0]
    blocks = blocks.reshape(rows, -1, _BLOCK_BYTES)
    scales = blocks[..., 0:2].copy().view(np.float16)[..., 0]
    offsets = blocks[..., 2:4].copy().view(np.float16)[..., 0]
    nibbles = blocks[..., 4:]  # byte j: q of element j (low), j + 16 (high)
    q = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=-1).reshape(rows, -1)  # [N, K] in column order
    qweight = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return {"qweight": qweight, "scales": scales, "offsets": offsets}
