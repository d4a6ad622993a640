"""Our Llama-family model against transformers on tiny random-weight models: teacher-forced logits at every
position, as one prefill and as chunked prefill / extend / batched decode steps through a shuffled paged cache."""

from __future__ import annotations

import random

import pytest
import torch
import transformers

from engine.models.config import ModelConfig
from engine.models.loader import load_model
from engine.models.testing import Chunk, allocate_kv_caches, prompt_logits, run_step

ATOL = 1e-3
TINY_ARCHS = ("llama", "llama-mqa", "mistral", "qwen2")


@pytest.fixture(scope="module")
def models(tiny_model_dir):
    """arch -> (ours, transformers'), both fp32 on CPU from the same directory."""
    loaded = {}

    def get(arch):
        if arch not in loaded:
            path = tiny_model_dir(arch)
            ours, _ = load_model(path, torch.float32, "cpu")
            theirs = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
            loaded[arch] = ours, theirs
        return loaded[arch]

    return get


def reference_logits(model, token_ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float()


def random_tokens(n: int, seed: int, vocab: int = 512) -> list[int]:
    return random.Random(seed).choices(range(vocab), k=n)


def test_config_parsing(tiny_model_dir):
    llama = ModelConfig.from_pretrained(tiny_model_dir("llama"))
    assert (llama.num_attention_heads, llama.num_key_value_heads, llama.head_dim) == (4, 2, 16)
    assert llama.rope_scaling["rope_type"] == "llama3" and llama.tie_word_embeddings
    assert not (llama.qkv_bias or llama.o_proj_bias or llama.mlp_bias)
    mqa = ModelConfig.from_pretrained(tiny_model_dir("llama-mqa"))
    assert mqa.num_key_value_heads == 1 and mqa.qkv_bias and mqa.o_proj_bias and mqa.mlp_bias
    assert mqa.rope_scaling == {"rope_type": "linear", "factor": 2.0} and mqa.rope_theta == 500.0
    mistral = ModelConfig.from_pretrained(tiny_model_dir("mistral"))
    assert mistral.head_dim == 32 and mistral.q_size == 128 and not mistral.tie_word_embeddings
    qwen = ModelConfig.from_pretrained(tiny_model_dir("qwen2"))
    assert qwen.architecture == "Qwen2ForCausalLM" and qwen.qkv_bias and not qwen.o_proj_bias


def test_config_rejects_unsupported():
    base = {"hidden_size": 64, "num_hidden_layers": 1, "num_attention_heads": 4, "intermediate_size": 8}
    base |= {"vocab_size": 16}
    with pytest.raises(ValueError, match="unsupported architecture"):
        ModelConfig.from_dict(base | {"architectures": ["GPT2LMHeadModel"]})
    with pytest.raises(ValueError, match="rope scaling"):
        ModelConfig.from_dict(
            base | {"model_type": "llama", "rope_scaling": {"rope_type": "yarn", "factor": 4}}
        )
    legacy = ModelConfig.from_dict(
        base | {"model_type": "llama", "rope_theta": 5e5, "rope_scaling": {"type": "linear", "factor": 4.0}}
    )
    assert legacy.rope_theta == 5e5 and legacy.rope_scaling == {"rope_type": "linear", "factor": 4.0}


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_prefill_logits_match_transformers(models, arch):
    ours, theirs = models(arch)
    tokens = random_tokens(45, seed=1)
    got = prompt_logits(ours, tokens, block_size=8)
    want = reference_logits(theirs, tokens)
    assert want.std() > 0.5  # the random weights make the logits far from uniform
    torch.testing.assert_close(got, want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("arch", TINY_ARCHS)
def test_chunked_paged_steps_match_transformers(models, arch):
    """Three sequences through one shuffled block pool (block_size 4):

    step 1: prefill A[0:10], B[0:7]          two first chunks
    step 2: decode B[7]; extend A[10:17]; prefill C[0:5]
    step 3+: decode A, B, C together, five times; then extend A by a chunk while B and C decode
    """
    ours, theirs = models(arch)
    block_size = 4
    seqs = {name: random_tokens(40, seed=i + 10) for i, name in enumerate("ABC")}
    pool = list(range(3 * 10 + 5))
    random.Random(0).shuffle(pool)
    tables = {name: pool[i * 10 : (i + 1) * 10] for i, name in enumerate("ABC")}
    kv_caches = allocate_kv_caches(ours.config, len(pool), block_size, torch.float32, "cpu")
    done = dict.fromkeys("ABC", 0)
    got = {name: [] for name in "ABC"}

    def step(decodes: list[str], prefills: list[tuple[str, int]]):
        chunks = [Chunk(seqs[n][done[n] : done[n] + 1], done[n], tables[n]) for n in decodes]
        chunks += [Chunk(seqs[n][done[n] : done[n] + k], done[n], tables[n]) for n, k in prefills]
        logits = run_step(ours, kv_caches, chunks[: len(decodes)], chunks[len(decodes) :], block_size)
        for chunk, name, out in zip(chunks, decodes + [n for n, _ in prefills], logits, strict=True):
            got[name].append(out)
            done[name] += len(chunk.token_ids)

    step([], [("A", 10), ("B", 7)])
    step(["B"], [("A", 7), ("C", 5)])
    for _ in range(5):
        step(["A", "B", "C"], [])
    step(["B", "C"], [("A", 9)])

    for name in "ABC":
        want = reference_logits(theirs, seqs[name][: done[name]])
        torch.testing.assert_close(torch.cat(got[name]), want, atol=ATOL, rtol=0, msg=f"sequence {name}")


def test_bfloat16_model_runs_and_stays_close(models, tiny_model_dir):
    """bf16 weights and cache: same argmax as fp32 on most positions (a smoke test of the dtype plumbing)."""
    fp32, _ = models("llama")
    bf16, _ = load_model(tiny_model_dir("llama"), torch.bfloat16, "cpu")
    assert bf16.model.layers[0].self_attn.qkv_proj.weight.dtype == torch.bfloat16
    tokens = random_tokens(30, seed=3)
    got = prompt_logits(bf16, tokens)
    want = prompt_logits(fp32, tokens)
    assert got.dtype == torch.float32
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() > 0.8


@pytest.mark.parametrize("layout", ["sharded", "pytorch_bin"])
def test_loader_reads_sharded_and_bin_checkpoints(models, tmp_path, layout):
    _, theirs = models("llama-mqa")
    if layout == "sharded":
        theirs.save_pretrained(tmp_path, max_shard_size="50KB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
    else:
        torch.save(theirs.state_dict(), tmp_path / "pytorch_model.bin")
        theirs.config.save_pretrained(tmp_path)
    ours, _ = load_model(tmp_path, torch.float32, "cpu")
    tokens = random_tokens(20, seed=4)
    torch.testing.assert_close(
        prompt_logits(ours, tokens), reference_logits(theirs, tokens), atol=ATOL, rtol=0
    )


def test_loader_rejects_mismatched_checkpoints(models, tmp_path):
    _, theirs = models("qwen2")
    state = theirs.state_dict()
    theirs.config.save_pretrained(tmp_path)
    state["model.extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"does not use: \['model.extra.weight'\]"):
        load_model(tmp_path, torch.float32, "cpu")
    del state["model.extra.weight"]
    state["model.layers.0.mlp.up_proj.weight"] = state["model.layers.0.mlp.up_proj.weight"][:-1]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(
        ValueError, match=r"gate_up_proj\.weight: checkpoint shapes \[\(128, 64\), \(127, 64\)\]"
    ):
        load_model(tmp_path, torch.float32, "cpu")
    del state["model.layers.0.mlp.up_proj.weight"]
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"no tensor 'model\.layers\.0\.mlp\.up_proj\.weight'"):
        load_model(tmp_path, torch.float32, "cpu")
