"""Convert a llama-architecture GGUF file into an ordinary Hugging Face model directory.

Output: `model.safetensors` (every tensor dequantized to fp32), `config.json` (LlamaForCausalLM),
`generation_config.json`, `tokenizer.json` and `tokenizer_config.json` (with the GGUF's chat template).
Only what the bundled models need is supported: the `llama` architecture with a byte-level BPE (`gpt2`)
vocabulary; anything else raises ValueError rather than converting into something subtly wrong.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from gguf import GGUFReader, dequantize
from safetensors.numpy import save_file
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

# GGUF tensor name (after "blk.N.") -> Hugging Face parameter name (after "model.layers.N.").
_LAYER_TENSORS = {
    "attn_norm.weight": "input_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}
_GLOBAL_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
}
# llama.cpp pre-tokenizer names whose regex splits every digit on its own before the GPT-2 regex.
_DIGIT_SPLIT_PRE = {"smollm", "starcoder", "refact", "codeshell"}
_GPT2_PRE = {"default", "gpt-2"}
_CONTROL_TOKEN_TYPES = {2, 3}  # unknown, control
_USER_DEFINED_TOKEN_TYPE = 4


def convert(gguf_path: Path, out_dir: Path, progress=None) -> None:
    """Write the HF directory `out_dir` (created) from `gguf_path`; `progress` is an optional rich Progress."""
    reader = GGUFReader(gguf_path)
    meta = {key: field.contents() for key, field in reader.fields.items()}
    if meta.get("general.architecture") != "llama":
        raise ValueError(f"unsupported GGUF architecture {meta.get('general.architecture')!r}")
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    config = hf_config(meta, tie_word_embeddings=not has_output)
    out_dir.mkdir(parents=True)
    save_file(
        _dequantized_tensors(reader, config, progress), str(out_dir / "model.safetensors"), {"format": "pt"}
    )
    _write_json(out_dir / "config.json", config)
    _write_json(out_dir / "generation_config.json", _generation_config(meta))
    tokenizer, tokenizer_config = hf_tokenizer(meta)
    tokenizer.save(str(out_dir / "tokenizer.json"))
    _write_json(out_dir / "tokenizer_config.json", tokenizer_config)


def hf_config(meta: dict, tie_word_embeddings: bool) -> dict:
    arch = meta["general.architecture"]
    hidden = meta[f"{arch}.embedding_length"]
    heads = meta[f"{arch}.attention.head_count"]
    head_dim = meta.get(f"{arch}.attention.key_length", hidden // heads)
    if meta.get(f"{arch}.rope.dimension_count", head_dim) != head_dim:
        raise ValueError("partial rotary embeddings are not supported")
    if f"{arch}.rope.scaling.type" in meta:
        raise ValueError("GGUF rope scaling is not supported")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": meta[f"{arch}.feed_forward_length"],
        "num_hidden_layers": meta[f"{arch}.block_count"],
        "num_attention_heads": heads,
        "num_key_value_heads": meta.get(f"{arch}.attention.head_count_kv", heads),
        "head_dim": head_dim,
        "max_position_embeddings": meta[f"{arch}.context_length"],
        "rms_norm_eps": _f32_shortest(meta[f"{arch}.attention.layer_norm_rms_epsilon"]),
        "rope_theta": _f32_shortest(meta.get(f"{arch}.rope.freq_base", 10000.0)),
        "rope_scaling": None,
        "vocab_size": meta.get(f"{arch}.vocab_size", len(meta["tokenizer.ggml.tokens"])),
        "tie_word_embeddings": tie_word_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    return config | _generation_config(meta)


def hf_tokenizer(meta: dict) -> tuple[Tokenizer, dict]:
    """A `tokenizers` byte-level BPE equal to the GGUF vocabulary, and its tokenizer_config.json."""
    if meta.get("tokenizer.ggml.model") != "gpt2":
        raise ValueError(f"unsupported GGUF tokenizer model {meta.get('tokenizer.ggml.model')!r}")
    tokens = meta["tokenizer.ggml.tokens"]
    token_types = meta["tokenizer.ggml.token_type"]
    merges = [tuple(merge.split(" ", 1)) for merge in meta["tokenizer.ggml.merges"]]
    tokenizer = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges, fuse_unk=False))
    tokenizer.pre_tokenizer = _pre_tokenizer(meta.get("tokenizer.ggml.pre", "default"))
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.add_tokens(
        [
            AddedToken(tokens[i], special=token_type in _CONTROL_TOKEN_TYPES, normalized=False)
            for i, token_type in enumerate(token_types)
            if token_type in _CONTROL_TOKEN_TYPES or token_type == _USER_DEFINED_TOKEN_TYPE
        ]
    )
    named = {
        f"{role}_token": tokens[meta[f"tokenizer.ggml.{key}_token_id"]]
        for role, key in (("bos", "bos"), ("eos", "eos"), ("unk", "unknown"), ("pad", "padding"))
        if f"tokenizer.ggml.{key}_token_id" in meta
    }
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    if add_bos:
        bos_id = int(meta["tokenizer.ggml.bos_token_id"])
        bos = tokens[bos_id]
        tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, bos_id)]
        )
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **named,
        "add_bos_token": add_bos,
        "add_eos_token": bool(meta.get("tokenizer.ggml.add_eos_token", False)),
        "clean_up_tokenization_spaces": False,
        "model_max_length": meta[f"{meta['general.architecture']}.context_length"],
    }
    if "tokenizer.chat_template" in meta:
        tokenizer_config["chat_template"] = meta["tokenizer.chat_template"]
    return tokenizer, tokenizer_config


def unpermute_qk(weight: np.ndarray, num_heads: int) -> np.ndarray:
    """Undo llama.cpp's convert_hf_to_gguf `permute` of q/k rows.

    llama.cpp stores each head's rows interleaved (pairs x0,x1 adjacent, for its GPT-J style rope);
    Hugging Face keeps the halves apart (rotate_half). Per head, with d = head_dim / 2:

        HF row:    [0, 1, ..., d-1 | d, d+1, ..., 2d-1]        view (head, 2, d)
        GGUF row:  [0, d, 1, d+1, ..., d-1, 2d-1]              view (head, d, 2)
    """
    rows = weight.shape[0]
    half = rows // num_heads // 2
    return weight.reshape(num_heads, half, 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def _dequantized_tensors(reader: GGUFReader, config: dict, progress) -> dict[str, np.ndarray]:
    heads = {"attn_q.weight": config["num_attention_heads"], "attn_k.weight": config["num_key_value_heads"]}
    task = progress.add_task("converting tensors", total=len(reader.tensors)) if progress else None
    tensors = {}
    for tensor in reader.tensors:
        weight = dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)
        suffix = tensor.name.split(".", 2)[-1]
        if tensor.name.startswith("blk.") and suffix in heads:
            weight = unpermute_qk(weight, heads[suffix])
        tensors[_hf_name(tensor.name)] = np.ascontiguousarray(weight)
        if progress:
            progress.advance(task)
    return tensors


def _hf_name(gguf_name: str) -> str:
    if gguf_name in _GLOBAL_TENSORS:
        return _GLOBAL_TENSORS[gguf_name]
    prefix, layer, suffix = gguf_name.split(".", 2)
    if prefix != "blk" or suffix not in _LAYER_TENSORS:
        raise ValueError(f"unsupported GGUF tensor {gguf_name!r}")
    return f"model.layers.{int(layer)}.{_LAYER_TENSORS[suffix]}"


def _pre_tokenizer(pre: str):
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre in _GPT2_PRE:
        return byte_level
    if pre in _DIGIT_SPLIT_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    raise ValueError(f"unsupported GGUF pre-tokenizer {pre!r}")


def _generation_config(meta: dict) -> dict:
    keys = {
        "bos_token_id": "bos_token_id",
        "eos_token_id": "eos_token_id",
        "pad_token_id": "padding_token_id",
    }
    return {
        hf: int(meta[f"tokenizer.ggml.{gg}"]) for hf, gg in keys.items() if f"tokenizer.ggml.{gg}" in meta
    }


def _f32_shortest(value: float) -> float:
    # GGUF stores f32; the shortest decimal that round-trips (1e-05, not 9.99999974e-06) is what the source had.
    return float(str(np.float32(value)))


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
