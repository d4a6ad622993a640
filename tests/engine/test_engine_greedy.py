"""Greedy outputs of our engine equal transformers' (same fp32 weights), token for token, under load:
concurrent staggered arrivals, shared prefixes, chunked prefill, n > 1 and forced preemption."""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest
import torch

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import GenerateRequest, SamplingParams, merge_outputs

TIE_GAP = 1e-4


@dataclass
class Divergence:
    prompt: int
    position: int
    gap: float


def run_engine_staggered(engine: LLMEngine, prompts: list[list[int]], params: list[SamplingParams]):
    """Add two requests per step, so arrivals interleave with prefills and decodes of earlier ones."""
    pending = list(enumerate(zip(prompts, params, strict=True)))
    merged = {}
    while pending or engine.has_unfinished():
        for _ in range(2):
            if pending:
                i, (prompt, sp) = pending.pop(0)
                engine.add_request(GenerateRequest(request_id=str(i), prompt_token_ids=prompt, params=sp))
        for out in engine.step():
            merged[out.request_id] = merge_outputs(merged.get(out.request_id), out)
        engine.kv.pool.check_integrity()
    used, _, _ = engine.kv.pool.counts()
    assert used == 0
    return [merged[str(i)] for i in range(len(prompts))]


def hf_greedy(model, prompt: list[int], max_new: int, eos: set[int]) -> list[int]:
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=max_new,
        do_sample=False,
        eos_token_id=sorted(eos) or None,
        pad_token_id=0,
    )
    tokens = out[0, len(prompt) :].tolist()
    for j, t in enumerate(tokens):
        if t in eos:
            return tokens[: j + 1]
    return tokens


def compare(model, prompts, ours: list[list[int]], refs: list[list[int]]) -> list[Divergence]:
    """Every mismatch must sit at a true tie of the reference; returns those ties."""
    ties = []
    for i, (prompt, got, want) in enumerate(zip(prompts, ours, refs, strict=True)):
        if got == want:
            continue
        j = next(
            (k for k, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want))
        )
        with torch.no_grad():
            logits = model(torch.tensor([prompt + want[:j]])).logits[0, -1]
        top2 = logits.topk(2).values
        gap = float(top2[0] - top2[1])
        assert gap < TIE_GAP, (
            f"prompt {i}: diverged at output token {j} where the reference is not tied (gap {gap})"
        )
        ties.append(Divergence(i, j, gap))
    return ties


def load_hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()


def bundled_prompts(tokenizer) -> list[list[int]]:
    system = "You are a careful assistant for a workflow tool. Answer briefly and precisely. " * 3
    questions = [
        "What is the capital of France?",
        "Name three colors.",
        "Write a haiku about rain.",
        "What is 12 times 7?",
        "Translate 'good morning' to Spanish.",
        "Give me a synonym for happy.",
        "Explain what a CPU does in one sentence.",
        "List the days of the week.",
        "What is the boiling point of water in Celsius?",
        "Who wrote Romeo and Juliet?",
        "Describe the color of the sky.",
        "What is an API?",
    ]
    prompts = [
        tokenizer.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": q}])
        for q in questions
    ]
    prompts += [tokenizer.apply_chat_template([{"role": "user", "content": q}]) for q in questions[:2]]
    prompts += ["The quick brown fox", "Once upon a time, " * 20]
    return [tokenizer.encode(p) for p in prompts]


@pytest.fixture(scope="module")
def bundled_engine_and_hf(bundled_model_dir):
    # 24 blocks of 16 tokens cannot hold 16 concurrent sequences: preemption is forced.
    block_bytes = 2 * 30 * 16 * 3 * 64 * 4
    engine = LLMEngine(
        EngineConfig(
            model=str(bundled_model_dir),
            dtype="float32",
            kv_cache_bytes=24 * block_bytes,
            max_num_batched_tokens=96,
            max_num_seqs=16,
        )
    )
    return engine, load_hf(bundled_model_dir)


def test_bundled_model_greedy_matches_transformers(bundled_engine_and_hf, record_property):
    engine, hf = bundled_engine_and_hf
    prompts = bundled_prompts(engine.tokenizer)
    assert len(prompts) >= 16
    max_new = 24
    params = [
        SamplingParams(temperature=0.0, max_tokens=max_new, n=2 if i % 5 == 0 else 1)
        for i in range(len(prompts))
    ]
    outputs = run_engine_staggered(engine, prompts, params)
    refs = [hf_greedy(hf, p, max_new, engine.eos_token_ids) for p in prompts]
    ours = [out.outputs[0].token_ids for out in outputs]
    ties = compare(hf, prompts, ours, refs)
    for out, sp in zip(outputs, params, strict=True):  # every one of n greedy completions is the same
        assert len(out.outputs) == sp.n
        assert all(c.token_ids == out.outputs[0].token_ids for c in out.outputs)
    assert engine.scheduler.num_preemptions > 0, "the tiny KV budget should have forced preemption"
    assert engine.kv.num_prefix_hits > 0, "the shared system prompt should have hit the prefix cache"
    record_property("greedy_ties", len(ties))
    print(
        f"bundled: {len(prompts)} prompts, {len(ties)} divergences at ties, "
        f"{engine.scheduler.num_preemptions} preemptions, prefix hit rate {engine.kv.prefix_hit_rate:.2f}"
    )


ARCHS = ["llama", "llama-mqa", "mistral", "qwen2"]


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_models_greedy_match_transformers(arch, tiny_model_dir):
    model_dir = tiny_model_dir(arch)
    hf = load_hf(model_dir)
    vocab = hf.config.vocab_size
    rng = random.Random(arch)
    shared = [rng.randrange(3, vocab) for _ in range(40)]
    prompts = [
        shared[: rng.randint(5, 40)] + [rng.randrange(3, vocab) for _ in range(rng.randint(1, 30))]
        for _ in range(16)
    ]
    engine = LLMEngine(
        EngineConfig(
            model=str(model_dir),
            dtype="float32",
            block_size=8,
            kv_cache_bytes=_tiny_budget(hf.config, blocks=20, block_size=8),
            max_num_batched_tokens=48,
            max_num_seqs=8,
        )
    )
    engine.eos_token_ids = set()  # random weights: run every sequence to max_tokens
    params = [
        SamplingParams(temperature=0.0, max_tokens=12, n=3 if i == 0 else 1) for i in range(len(prompts))
    ]
    outputs = run_engine_staggered(engine, prompts, params)
    refs = [hf_greedy(hf, p, 12, set()) for p in prompts]
    ties = compare(hf, prompts, [o.outputs[0].token_ids for o in outputs], refs)
    assert all(c.token_ids == outputs[0].outputs[0].token_ids for c in outputs[0].outputs)
    assert engine.scheduler.num_preemptions > 0
    print(f"{arch}: {len(ties)} divergences at ties")


def _tiny_budget(config, blocks: int, block_size: int) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return blocks * 2 * config.num_hidden_layers * block_size * config.num_key_value_heads * head_dim * 4
