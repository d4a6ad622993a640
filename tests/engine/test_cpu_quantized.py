"""Serving the bundled model with int8 / int4 weights on the CPU, against fp32 greedy output.

- int4 variant (the GGUF's own Q4_1 blocks): its dequantized weights are bit-identical to the fp32
  conversion's, so with the same (fp32) lm_head greedy output is token-exact.
- `quantization=int8` (every linear per channel, lm_head included) and `quantization=int4` (lm_head in int8):
  (int4 config: lm_head int8 per 32 input channels gives the embedding's Q8_0 weights back exactly, so the int4
  config is token-exact too; asserted with the same tolerance as int8, whose weights differ): at least 6 of the
  8 prompts token-exact over 24 tokens, and at least 75% of all reference tokens before the first divergence
  (measured: int8 6/8, 79%; int4 8/8).
"""

import pytest
import torch

from engine import assets
from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.models.int4 import GGUFInt4Linear
from engine.models.loader import load_model
from engine.protocol import SamplingParams
from kernels.cpu import quant_linear as ql

QUESTIONS = (
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain what a prime number is.",
    "Write a haiku about autumn leaves.",
    "How do I boil an egg?",
    "Why is the sky blue?",
)
MAX_TOKENS = 24


@pytest.fixture(scope="module")
def int4_dir(bundled_model_dir):
    return assets.pull_int4("smollm2-135m")


def _greedy(config: EngineConfig) -> list[list[int]]:
    engine = LLMEngine(config)
    engine.eos_token_ids = set()  # full length: more tokens compared
    prompts = [engine.tokenizer.apply_chat_template([{"role": "user", "content": q}]) for q in QUESTIONS]
    prompts += ["The quick brown fox", "Once upon a time, in a small village by the sea,"]
    outputs = engine.generate(prompts, SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS))
    return [out.outputs[0].token_ids for out in outputs]


@pytest.fixture(scope="module")
def fp32_greedy(bundled_model_dir):
    return _greedy(EngineConfig(model=str(bundled_model_dir), dtype="float32", kv_cache_bytes=32 << 20))


def _prefix(a, b):
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), len(a))


def test_int4_variant_has_exactly_the_fp32_weights(bundled_model_dir, int4_dir):
    fp32, _ = load_model(bundled_model_dir, torch.float32, "cpu")
    int4, _ = load_model(int4_dir, torch.float32, "cpu")
    for i in (0, 17, 29):
        for dense, quant in (
            (fp32.model.layers[i].self_attn.qkv_proj, int4.model.layers[i].self_attn.qkv_proj),
            (fp32.model.layers[i].mlp.down_proj, int4.model.layers[i].mlp.down_proj),
        ):
            assert isinstance(quant, GGUFInt4Linear) and quant.packed.bits == 4
            assert torch.equal(ql.dequantize(quant.packed), dense.weight)


def test_int4_variant_greedy_is_token_exact(int4_dir, fp32_greedy):
    """auto-detected int4 checkpoint: the linears through the int4 kernel, lm_head dense as in fp32."""
    ours = _greedy(EngineConfig(model=str(int4_dir), kv_cache_bytes=32 << 20, dtype="float32"))
    assert ours == fp32_greedy


@pytest.mark.parametrize("quantization", ["int8", "int4"])
def test_quantized_serving_greedy_within_tolerance(bundled_model_dir, fp32_greedy, quantization):
    config = EngineConfig(model=str(bundled_model_dir), quantization=quantization, kv_cache_bytes=32 << 20)
    ours = _greedy(config)
    exact = sum(a == b for a, b in zip(ours, fp32_greedy, strict=True))
    prefix = sum(_prefix(a, b) for a, b in zip(fp32_greedy, ours, strict=True)) / sum(map(len, fp32_greedy))
    assert exact >= 6 and prefix >= 0.75, f"{exact}/{len(ours)} exact, {prefix:.0%} prefix"


def test_quantization_needs_float32_on_cpu(bundled_model_dir):
    with pytest.raises(ValueError, match="float32"):
        LLMEngine(EngineConfig(model=str(bundled_model_dir), quantization="int8", dtype="bfloat16"))


def test_int4_of_a_dense_local_checkpoint_is_refused(tiny_model_dir):
    with pytest.raises(ValueError, match="flowgate quantize awq"):
        LLMEngine(EngineConfig(model=str(tiny_model_dir("llama")), quantization="int4"))
