"""Speculative decoding changes nothing but speed: greedy output token for token (bundled model and the tiny
architectures, under preemption and chunked prefill), every sampling feature, and the adaptive policy."""

from __future__ import annotations

import json
import random

import pytest

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import GuidedDecoding, SamplingParams
from engine.spec.policy import AdaptivePolicy
from tests.engine.test_engine_greedy import (
    ARCHS,
    _tiny_budget,
    compare,
    hf_greedy,
    load_hf,
    run_engine_staggered,
)


def copy_prompts(rng: random.Random, vocab: int, num: int) -> list[list[int]]:
    """Prompts that repeat their own phrases, so prompt lookup finds drafts (random models loop, too)."""
    prompts = []
    for _ in range(num):
        phrase = [rng.randrange(3, vocab) for _ in range(rng.randint(3, 8))]
        prompts.append([rng.randrange(3, vocab) for _ in range(rng.randint(1, 20))] + phrase * rng.randint(2, 4))
    return prompts


@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_models_greedy_with_speculation_match_transformers(arch, tiny_model_dir):
    model_dir = tiny_model_dir(arch)
    hf = load_hf(model_dir)
    prompts = copy_prompts(random.Random(arch), hf.config.vocab_size, 12)
    engine = LLMEngine(EngineConfig(
        model=str(model_dir), dtype="float32", block_size=8, kv_cache_bytes=_tiny_budget(hf.config, 20, 8),
        max_num_batched_tokens=48, max_num_seqs=8, speculative="ngram", num_speculative_tokens=5,
    ))
    engine.eos_token_ids = set()
    params = [SamplingParams(temperature=0.0, max_tokens=16, n=2 if i == 0 else 1) for i in range(len(prompts))]
    outputs = run_engine_staggered(engine, prompts, params)
    refs = [hf_greedy(hf, p, 16, set()) for p in prompts]
    compare(hf, prompts, [o.outputs[0].token_ids for o in outputs], refs)
    assert all(len(o.outputs[0].token_ids) == 16 for o in outputs)  # never past max_tokens
    assert outputs[0].outputs[0].token_ids == outputs[0].outputs[1].token_ids
    stats = engine.stats()
    assert stats.spec_accepted_tokens > 0
    assert engine.scheduler.num_preemptions > 0


@pytest.fixture(scope="module")
def bundled_pair(bundled_model_dir):
    def build(speculative):
        return LLMEngine(EngineConfig(
            model=str(bundled_model_dir), dtype="float32", kv_cache_bytes=48 << 20, max_num_batched_tokens=256,
            speculative=speculative, num_speculative_tokens=5,
        ))

    return build("off"), build("ngram")


COPY_PROMPT = (
    "Extract the fields as JSON.\nText: Order 4471 from Maria Gonzalez, shipped to 12 Harbor Road, Portsmouth, "
    "on March 3rd; total 89.50 EUR.\nJSON: {\"order\": 4471, \"name\": \"Maria Gonzalez\", \"address\": \""
)


def test_bundled_model_greedy_identical_with_speculation(bundled_pair):
    off, spec = bundled_pair
    chat = off.tokenizer.apply_chat_template([{"role": "user", "content": "Name three colors."}])
    prompts = [COPY_PROMPT, chat, "def add(a, b):\n    return a + b\n\ndef add3(a, b, c):\n    return"]
    params = SamplingParams(temperature=0.0, max_tokens=40)
    want = off.generate(prompts, params)
    got = spec.generate(prompts, params)
    for a, b in zip(want, got, strict=True):
        assert b.outputs[0].token_ids == a.outputs[0].token_ids
        assert b.outputs[0].text == a.outputs[0].text and b.outputs[0].finish_reason == a.outputs[0].finish_reason
    stats = spec.stats()
    assert stats.spec_accepted_tokens >= 10 and stats.spec_draft_tokens > stats.spec_accepted_tokens  # both paths


FEATURES = {
    "logprobs": SamplingParams(temperature=0.0, max_tokens=24, logprobs=3),
    "penalties": SamplingParams(temperature=0.0, max_tokens=24, frequency_penalty=0.1, repetition_penalty=1.05),
    "stop string": SamplingParams(temperature=0.0, max_tokens=40, stop=["Portsmouth"]),
    "stop string kept": SamplingParams(temperature=0.0, max_tokens=40, stop=[", "], include_stop_str_in_output=True),
    "n=3 seeded sampling": SamplingParams(temperature=0.8, top_p=0.9, max_tokens=24, n=3, seed=7),
    "max_tokens 3": SamplingParams(temperature=0.0, max_tokens=3),
    "grammar": SamplingParams(temperature=0.0, max_tokens=60, guided=GuidedDecoding(kind="json_schema", spec=(
        '{"type": "object", "properties": {"order": {"type": "integer"}, "name": {"type": "string"}, '
        '"address": {"type": "string"}}, "required": ["order", "name", "address"]}'))),
}


@pytest.mark.parametrize("feature", FEATURES)
def test_features_unchanged_by_speculation(bundled_pair, feature):
    off, spec = bundled_pair
    params = FEATURES[feature]
    prompt = COPY_PROMPT if feature != "grammar" else COPY_PROMPT.rsplit("JSON:", 1)[0] + "JSON:"
    drafted = spec.stats().spec_draft_tokens
    (want,), (got,) = off.generate([prompt], params), spec.generate([prompt], params)
    for a, b in zip(want.outputs, got.outputs, strict=True):
        assert (b.token_ids, b.text, b.finish_reason, b.stop_reason) == (a.token_ids, a.text, a.finish_reason, a.stop_reason)
        if params.logprobs is not None:
            assert [lp.token_id for lp in b.logprobs] == b.token_ids
            for x, y in zip(a.logprobs, b.logprobs, strict=True):
                assert [t.token_id for t in x.top] == [t.token_id for t in y.top]
                assert y.logprob == pytest.approx(x.logprob, abs=1e-3)
    assert spec.stats().spec_draft_tokens > drafted or feature == "max_tokens 3"


def test_no_drafts_when_the_batch_is_large(tiny_model_dir):
    engine = LLMEngine(EngineConfig(
        model=str(tiny_model_dir("llama")), dtype="float32", kv_cache_bytes=8 << 20, max_num_seqs=16,
        speculative="ngram", speculative_max_batch=4,
    ))
    engine.eos_token_ids = set()
    seen = []
    propose = engine.speculator.propose

    def spy(running):
        propose(running)
        seen.append((len(running), sum(len(s.spec_token_ids) for s in running)))

    engine.speculator.propose = spy
    prompts = copy_prompts(random.Random(1), 512, 12)
    engine.generate(prompts, [SamplingParams(temperature=0.0, max_tokens=8 + 4 * i) for i in range(12)])
    assert seen and all(drafts == 0 for batch, drafts in seen if batch > 4)
    assert any(drafts > 0 for batch, drafts in seen if batch <= 4)  # the tail of the run speculates


def test_policy_backs_off_with_batch_size_and_acceptance():
    policy = AdaptivePolicy(max_tokens=5, max_batch=8)
    assert policy.num_draft_tokens(1, 0.95) == 5
    assert policy.num_draft_tokens(9, 0.99) == 0
    assert policy.num_draft_tokens(1, 0.05) == 0
    assert policy.num_draft_tokens(8, 0.6) < policy.num_draft_tokens(1, 0.6)


def truncated_copy(model_dir, out_dir, num_layers: int, noise: float = 0.0):
    """A draft model from the target's first layers, its weights perturbed (same tokenizer files): a tiny
    model made in the test."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.model.layers = model.model.layers[:num_layers]
    model.config.num_hidden_layers = num_layers
    torch.manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(noise * torch.randn_like(param))
    model.save_pretrained(out_dir)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        shutil.copy(model_dir / name, out_dir / name)
    return out_dir


@pytest.mark.parametrize("draft", ["same model", "one noisy layer"])
def test_draft_model_greedy_matches_transformers(draft, tiny_model_dir, tmp_path):
    model_dir = tiny_model_dir("llama")
    draft_dir = model_dir if draft == "same model" else truncated_copy(model_dir, tmp_path, 1, noise=0.5)
    hf = load_hf(model_dir)
    rng = random.Random(draft)
    prompts = [[rng.randrange(3, 512) for _ in range(rng.randint(2, 30))] for _ in range(10)]
    engine = LLMEngine(EngineConfig(
        model=str(model_dir), dtype="float32", block_size=8, kv_cache_bytes=_tiny_budget(hf.config, 24, 8),
        max_num_batched_tokens=48, max_num_seqs=8, speculative="draft", speculative_model=str(draft_dir),
        num_speculative_tokens=4,
    ))
    engine.eos_token_ids = set()
    outputs = run_engine_staggered(engine, prompts, [SamplingParams(temperature=0.0, max_tokens=14)] * len(prompts))
    refs = [hf_greedy(hf, p, 14, set()) for p in prompts]
    compare(hf, prompts, [o.outputs[0].token_ids for o in outputs], refs)
    stats = engine.stats()
    if draft == "same model":
        assert stats.spec_accepted_tokens > 0.9 * stats.spec_draft_tokens > 0
    else:
        assert stats.spec_draft_tokens > stats.spec_accepted_tokens
    drafter = engine.speculator.drafter
    engine.step()  # finished sequences leave the draft cache at the next step
    assert not drafter._shadows and drafter.kv.pool.counts()[0] == 0  # the draft cache is empty again


def test_bench_spec_runs_every_mode(tiny_model_dir, capsys):
    from engine.bench.spec_bench import run

    result = run(model=str(tiny_model_dir("qwen2")), max_tokens=6, draft_model=None, dtype="float32", k=3,
                 as_json=True, rounds=1, concurrency=(1, 32))
    assert result["greedy_identical"] is True
    assert {"speedup_ngram_c1_copy", "speedup_ngram_c32_copy", "speedup_draft_c1_chat"} <= result.keys()
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(last)["greedy_identical"] is True
