"""The bundled model: pulled into the cache, loaded fast by our loader, and equal to transformers both on the
converted directory and on transformers' own reading of the original GGUF."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch
import transformers
from safetensors.torch import load_file

from engine import assets
from engine.gguf_convert import unpermute_qk
from engine.models.config import ModelConfig
from engine.models.loader import load_model
from engine.models.testing import prompt_logits
from engine.tokenizer import Tokenizer

ATOL = 1e-3
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
ANSWER = "The capital of France is Paris."  # this model's greedy answer, teacher-forced below


@pytest.fixture(scope="module")
def ours(bundled_model_dir):
    model, _ = load_model(bundled_model_dir, torch.float32, "cpu")
    return model


@pytest.fixture(scope="module")
def prompt(bundled_model_dir) -> tuple[list[int], int]:
    """(token ids of question + answer, number of question tokens)."""
    tokenizer = Tokenizer.from_dir(bundled_model_dir)
    question = tokenizer.encode(tokenizer.apply_chat_template(QUESTION))
    return question + tokenizer.encode(ANSWER), len(question)


def test_pull_is_idempotent_and_complete(bundled_model_dir):
    assert assets.pull("smollm2-135m") == bundled_model_dir
    files = {p.name for p in bundled_model_dir.iterdir()}
    assert {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"} <= files
    assert "tokenizer_config.json" in files
    config = ModelConfig.from_pretrained(bundled_model_dir)
    assert (config.num_hidden_layers, config.hidden_size, config.intermediate_size) == (30, 576, 1536)
    assert (config.num_attention_heads, config.num_key_value_heads, config.head_dim) == (9, 3, 64)
    assert (config.vocab_size, config.rope_theta, config.max_position_embeddings) == (49152, 1e5, 8192)
    assert config.tie_word_embeddings and config.rms_norm_eps == 1e-5 and config.rope_scaling is None
    generation = json.loads((bundled_model_dir / "generation_config.json").read_text())
    assert (generation["bos_token_id"], generation["eos_token_id"]) == (1, 2)


def test_resolve_model_path_and_listing(bundled_model_dir, tmp_path, monkeypatch, capsys):
    assert assets.resolve(str(tmp_path)) == tmp_path
    assert assets.resolve("smollm2-135m") == bundled_model_dir
    assert assets.model_path("smollm2-135m") == bundled_model_dir
    with pytest.raises(ValueError, match="known: smollm2-135m"):
        assets.resolve("no-such-model")
    assets.print_models()
    assert "smollm2-135m" in capsys.readouterr().out
    monkeypatch.setenv("FLOWGATE_HOME", str(tmp_path / "empty-home"))
    with pytest.raises(FileNotFoundError, match="flowgate models pull smollm2-135m"):
        assets.model_path("smollm2-135m")


def test_second_load_is_fast(bundled_model_dir, ours):
    """The fixture's load warmed the page cache; the best of two loads is what the loader costs on a quiet host."""
    elapsed = []
    for _ in range(2):
        start = time.perf_counter()
        load_model(bundled_model_dir, torch.float32, "cpu")
        elapsed.append(time.perf_counter() - start)
    assert min(elapsed) < 3.0, f"loading took {elapsed} s"


def test_logits_match_transformers_on_the_converted_dir(bundled_model_dir, ours, prompt):
    tokens, num_question = prompt
    theirs = transformers.AutoModelForCausalLM.from_pretrained(bundled_model_dir, dtype=torch.float32).eval()
    got = prompt_logits(ours, tokens)
    with torch.no_grad():
        want = theirs(torch.tensor([tokens])).logits[0]
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
    # The converted model is a working model: it predicts its own answer token by token.
    assert got[num_question - 1 : -1].argmax(-1).tolist() == tokens[num_question:]


@pytest.mark.slow  # transformers parses the GGUF's 49k-token vocabulary in Python: ~10 s
def test_conversion_matches_transformers_reading_the_gguf(bundled_model_dir, ours, prompt, tmp_path):
    """transformers' GGUF path (what from_pretrained(..., gguf_file=...) runs) reads the config, dequantizes and
    un-permutes on its own: our safetensors must hold the same numbers, and its model give our logits."""
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf_path = assets.download_gguf("smollm2-135m", tmp_path)
    with torch.device("meta"):  # only names the tensors for transformers' GGUF -> HF mapping
        skeleton = transformers.AutoModelForCausalLM.from_config(
            transformers.AutoConfig.from_pretrained(bundled_model_dir)
        )
    parsed = load_gguf_checkpoint(gguf_path, return_tensors=True, model_to_load=skeleton)
    converted = load_file(bundled_model_dir / "model.safetensors")
    assert converted.keys() == parsed["tensors"].keys()
    for name, tensor in parsed["tensors"].items():
        assert torch.equal(converted[name], tensor), name

    reference = transformers.AutoModelForCausalLM.from_config(
        transformers.LlamaConfig(**parsed["config"]), dtype=torch.float32
    ).eval()
    missing, unexpected = reference.load_state_dict(parsed["tensors"], strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}
    tokens, _ = prompt
    with torch.no_grad():
        want = reference(torch.tensor([tokens])).logits[0]
    torch.testing.assert_close(prompt_logits(ours, tokens), want, atol=ATOL, rtol=0)


def test_unpermute_inverts_llama_cpp_permute():
    def llama_cpp_permute(weights, n_head):  # convert_hf_to_gguf.py, LlamaModel.permute
        return (
            weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2)
            .reshape(weights.shape)
        )

    rng = np.random.default_rng(0)
    for heads, head_dim in [(9, 64), (3, 64), (4, 6)]:
        hf = rng.standard_normal((heads * head_dim, 10)).astype(np.float32)
        permuted = llama_cpp_permute(hf, heads)
        assert not np.array_equal(permuted, hf)
        np.testing.assert_array_equal(unpermute_qk(permuted, heads), hf)
