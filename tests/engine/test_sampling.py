"""Sampling parameters through the real engine (bundled model): each one changes the output as specified."""

import pytest

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import SamplingParams


@pytest.fixture(scope="module")
def engine(bundled_model_dir):
    return LLMEngine(EngineConfig(model=str(bundled_model_dir), dtype="float32", kv_cache_bytes=32 << 20))


def tokens(engine, prompt, **params):
    (out,) = engine.generate([prompt], SamplingParams(**params))
    return out.outputs[0].token_ids


PROMPT = "List the numbers one, two, three, one, two, three, one, two, three,"


def test_greedy_equals_top_k_one(engine):
    assert tokens(engine, PROMPT, temperature=0.0, max_tokens=12) == tokens(
        engine, PROMPT, temperature=1.5, top_k=1, seed=3, max_tokens=12
    )


def test_logit_bias_forces_a_token(engine):
    forced = engine.tokenizer.encode(" banana")[0]
    out = tokens(engine, PROMPT, temperature=0.0, max_tokens=4, logit_bias={forced: 100.0})
    assert out == [forced] * 4


def test_penalties_reduce_repetition(engine):
    plain = tokens(engine, PROMPT, temperature=0.0, max_tokens=32, ignore_eos=True)
    for params in ({"frequency_penalty": 2.0}, {"presence_penalty": 2.0}, {"repetition_penalty": 1.8}):
        penalized = tokens(engine, PROMPT, temperature=0.0, max_tokens=32, ignore_eos=True, **params)
        assert len(set(penalized)) > len(set(plain)), params


def test_min_p_and_top_p_near_one_keep_only_the_top_token(engine):
    greedy = tokens(engine, PROMPT, temperature=0.0, max_tokens=8)
    assert tokens(engine, PROMPT, temperature=1.0, min_p=0.999, seed=1, max_tokens=8) == greedy
    assert tokens(engine, PROMPT, temperature=1.0, top_p=1e-6, seed=1, max_tokens=8) == greedy


def test_seed_reproduces_and_temperature_varies(engine):
    a = tokens(engine, PROMPT, temperature=1.2, seed=11, max_tokens=16, ignore_eos=True)
    b = tokens(engine, PROMPT, temperature=1.2, seed=11, max_tokens=16, ignore_eos=True)
    c = tokens(engine, PROMPT, temperature=1.2, seed=12, max_tokens=16, ignore_eos=True)
    assert a == b and a != c


def test_stop_token_ids_and_max_tokens(engine):
    greedy = tokens(engine, PROMPT, temperature=0.0, max_tokens=8, ignore_eos=True)
    (out,) = engine.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=8, stop_token_ids=[greedy[2]]))
    completion = out.outputs[0]
    assert completion.token_ids == greedy[:3] and completion.finish_reason == "stop"
    assert completion.stop_reason == greedy[2]
    (out,) = engine.generate([PROMPT], SamplingParams(temperature=0.0, max_tokens=5, ignore_eos=True))
    assert len(out.outputs[0].token_ids) == 5 and out.outputs[0].finish_reason == "length"
