"""A step abandoned between layers (for a request that outranks it) leaves no trace: the same tokens, the same
block accounting, as if it had never started."""

import itertools

import pytest

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import GenerateRequest, SamplingParams


def run(engine: LLMEngine, interrupt=None) -> dict[str, list[int]]:
    for i, priority in enumerate((1, 1, 2)):
        engine.add_request(GenerateRequest(request_id=f"r{i}", prompt_token_ids=[5 + i] * (9 + 7 * i),
                                           params=SamplingParams(temperature=0.0, max_tokens=24), priority=priority))
    tokens: dict[str, list[int]] = {}
    while engine.has_unfinished():
        for out in engine.step(interrupt):
            tokens.setdefault(out.request_id, []).extend(t for c in out.outputs for t in c.token_ids)
        engine.kv.pool.check_integrity()
    return tokens


@pytest.mark.parametrize("speculative", ["off", "ngram"])
def test_interrupted_steps_change_no_output(tiny_model_dir, speculative):
    def engine():
        e = LLMEngine(EngineConfig(model=str(tiny_model_dir("llama")), dtype="float32", block_size=8,
                                   max_num_batched_tokens=16, speculative=speculative, kv_cache_bytes=4 << 20))
        e.eos_token_ids = set()
        return e

    expected = run(engine())
    asked = []
    calls = itertools.count()

    def interrupt(priority: int) -> bool:
        asked.append(priority)
        return next(calls) % 5 == 1  # abandon many steps, each at its second layer

    interrupted = engine()
    assert run(interrupted, interrupt) == expected
    assert interrupted.num_interrupted_steps >= 3
    assert interrupted.stats().num_interrupted_steps == interrupted.num_interrupted_steps
    assert set(asked) == {1, 2}  # the step's most important priority: 2 only once the 1s are done
