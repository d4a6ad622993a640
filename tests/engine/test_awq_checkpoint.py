"""Our AWQ checkpoints: the AutoAWQ format on disk, loading through the normal loader (fused packed shards),
the AWQ linear against the kernels' reference, and greedy generation in the engine."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.models.awq import AWQLinear, awq_linear_factory
from engine.models.layers import linear_factory
from engine.models.loader import load_model
from engine.models.testing import prompt_logits
from engine.protocol import SamplingParams
from engine.quant.awq import LINEARS, quantize_model
from engine.quant.int4 import quantize_int4, to_awq_tensors
from kernels.awq_gemm import awq_dequantize_ref

GROUP_SIZE = 32
ARCHS = ("llama", "llama-mqa", "mistral", "qwen2")


@pytest.fixture(scope="module")
def awq_dir(tiny_model_dir, tmp_path_factory):
    """`awq_dir(arch)` -> our AWQ checkpoint of the tiny model (small calibration: the format is under test)."""
    built = {}

    def build(arch: str):
        if arch not in built:
            out = tmp_path_factory.mktemp(f"awq-{arch}") / "model"
            quantize_model(tiny_model_dir(arch), out, group_size=GROUP_SIZE, num_samples=8, seq_len=64)
            built[arch] = out
        return built[arch]

    return build


def test_checkpoint_is_autoawq_gemm_format(tiny_model_dir, awq_dir):
    source, out = tiny_model_dir("llama"), awq_dir("llama")
    config = json.loads((out / "config.json").read_text())
    assert config["quantization_config"] == {
        "quant_method": "awq", "bits": 4, "group_size": GROUP_SIZE, "zero_point": True, "version": "gemm",
    }
    assert config["torch_dtype"] == "float16"
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (source / name).read_bytes()
    original = load_file(source / "model.safetensors")
    with safe_open(out / "model.safetensors", "pt") as f:
        names = set(f.keys())
        for layer in range(config["num_hidden_layers"]):
            for proj in LINEARS:
                prefix = f"model.layers.{layer}.{proj}"
                n, k = original[f"{prefix}.weight"].shape
                assert f"{prefix}.weight" not in names
                assert f.get_tensor(f"{prefix}.qweight").shape == (k, n // 8)
                assert f.get_tensor(f"{prefix}.qweight").dtype == torch.int32
                assert f.get_tensor(f"{prefix}.qzeros").shape == (k // GROUP_SIZE, n // 8)
                assert f.get_tensor(f"{prefix}.qzeros").dtype == torch.int32
                assert f.get_tensor(f"{prefix}.scales").shape == (k // GROUP_SIZE, n)
                assert f.get_tensor(f"{prefix}.scales").dtype == torch.float16
        unquantized = {n for n in original if not any(f".{proj}.weight" in n for proj in LINEARS)}
        assert unquantized <= names and "lm_head.weight" not in names  # tied: stored once
        assert all(f.get_tensor(n).dtype == torch.float16 for n in unquantized)


def test_quantized_weights_are_close_to_the_originals(tiny_model_dir, awq_dir):
    """Dequantized q_proj times the folded norm ratio (= 1/s) is the original weight, up to int4 error."""
    original = load_file(tiny_model_dir("qwen2") / "model.safetensors")
    tensors = load_file(awq_dir("qwen2") / "model.safetensors")
    prefix = "model.layers.0"
    q = f"{prefix}.self_attn.q_proj"
    w = awq_dequantize_ref(tensors[f"{q}.qweight"], tensors[f"{q}.qzeros"], tensors[f"{q}.scales"].float(), 32).t()
    norm_ratio = tensors[f"{prefix}.input_layernorm.weight"].float() / original[f"{prefix}.input_layernorm.weight"]
    relative = (w * norm_ratio - original[f"{q}.weight"]).norm() / original[f"{q}.weight"].norm()
    assert relative < 0.15
    assert torch.equal(tensors[f"{q}.bias"], original[f"{q}.bias"].half())  # biases pass through in fp16


def _hf_with_checkpoint_weights(source, out):
    """transformers' model on the checkpoint's dequantized weights: an independent reference for our loader."""
    model = transformers.AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    group_size = json.loads((out / "config.json").read_text())["quantization_config"]["group_size"]
    tensors = load_file(out / "model.safetensors")
    state = {}
    for name, tensor in tensors.items():
        if name.endswith(".qweight"):
            prefix = name.removesuffix(".qweight")
            zeros, scales = tensors[f"{prefix}.qzeros"], tensors[f"{prefix}.scales"].float()
            state[f"{prefix}.weight"] = awq_dequantize_ref(tensor, zeros, scales, group_size).t()
        elif not name.endswith((".qzeros", ".scales")):
            state[name] = tensor.float()
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    return model.eval()


@pytest.mark.parametrize("arch", ARCHS)
def test_loader_fuses_packed_shards_and_matches_transformers(tiny_model_dir, awq_dir, arch):
    out = awq_dir(arch)
    model, _ = load_model(out, torch.float32, "cpu")
    qkv = model.model.layers[1].self_attn.qkv_proj
    assert isinstance(qkv, AWQLinear)
    tensors = load_file(out / "model.safetensors")
    for param in ("qweight", "qzeros", "scales"):
        shards = [tensors[f"model.layers.1.self_attn.{p}_proj.{param}"] for p in "qkv"]
        assert torch.equal(getattr(qkv, param), torch.cat(shards, dim=1))
    ids = list(range(3, 40))
    ours = prompt_logits(model, ids)
    with torch.inference_mode():
        reference = _hf_with_checkpoint_weights(tiny_model_dir(arch), out)(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(ours, reference, atol=2e-4, rtol=2e-4)


def test_engine_generates_greedily_from_an_awq_checkpoint(tiny_model_dir, awq_dir):
    out = awq_dir("llama")
    engine = LLMEngine(EngineConfig(model=str(out), dtype="float32", block_size=8, kv_cache_bytes=1 << 20))
    engine.eos_token_ids = set()
    prompts = [[5, 17, 42, 99, 7], [300, 12, 8]]
    outputs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=12))
    reference = _hf_with_checkpoint_weights(tiny_model_dir("llama"), out)
    for prompt, output in zip(prompts, outputs, strict=True):
        want = reference.generate(
            torch.tensor([prompt]), max_new_tokens=12, do_sample=False, eos_token_id=None, pad_token_id=0
        )[0, len(prompt) :].tolist()
        assert output.outputs[0].token_ids == want


@pytest.mark.parametrize("shape", [(5, 64, 40), (2, 3, 96, 16)])
def test_awq_linear_equals_matmul_with_the_dequantized_weight(shape):
    *lead, k, n = shape
    gen = torch.Generator().manual_seed(0)
    linear = AWQLinear(k, n, bias=True, group_size=GROUP_SIZE)
    packed = to_awq_tensors(quantize_int4(torch.randn(n, k, generator=gen), GROUP_SIZE))
    with torch.no_grad():
        for name, tensor in packed.items():
            getattr(linear, name).copy_(tensor)
        linear.bias.copy_(torch.randn(n, generator=gen))
    linear.process_weights_after_loading()
    x = torch.randn(*lead, k, generator=gen)
    # fp32 scales: (q - z) * s exactly, as the fp32 engine computes it (fp16 scales would round W to fp16)
    weight = awq_dequantize_ref(linear.qweight, linear.qzeros, linear.scales.float(), GROUP_SIZE)
    expected = x @ weight + linear.bias
    torch.testing.assert_close(linear(x), expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("override", "message"),
    [({"version": "gemv"}, "version"), ({"bits": 8}, "bits"), ({"zero_point": False}, "zero_point"),
     ({"modules_to_not_convert": ["model.layers.0.mlp"]}, "modules_to_not_convert")],
)
def test_unsupported_awq_variants_are_rejected(override, message):
    config = {"quant_method": "awq", "bits": 4, "group_size": 128, "zero_point": True, "version": "GEMM"}
    assert linear_factory(config)(256, 64, False).qweight.shape == (256, 8)
    with pytest.raises(ValueError, match=message):
        awq_linear_factory(config | override)


def test_cli_quantizes_with_the_group_size_fallback(tiny_model_dir, tmp_path):
    from gateway.cli import app

    out = tmp_path / "awq"
    result = CliRunner().invoke(app, ["quantize", "awq", str(tiny_model_dir("mistral")), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "group size 128 does not divide every in_features [64, 128]: using 64" in result.output
    assert json.loads((out / "config.json").read_text())["quantization_config"]["group_size"] == 64


def test_triton_awq_gemm_path_matches_the_cpu_path(awq_dir, monkeypatch):
    """The CUDA code path (awq_gemm on the packed tensors) run in Triton's interpreter, against the dense CPU copy."""
    model, _ = load_model(awq_dir("qwen2"), torch.float32, "cpu")
    ids = [3 + (i * 37) % 300 for i in range(13)]
    reference = prompt_logits(model, ids)
    monkeypatch.setenv("FLOWGATE_KERNELS", "triton")
    triton = prompt_logits(model, ids)
    assert (triton - reference).abs().max() < 1e-3
    assert reference.std() > 1.0
