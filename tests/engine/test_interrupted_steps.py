"""A step abandoned between layers (for a request that outranks it) leaves no trace: the same tokens, the same
block accounting, as if it had never started."""

import itertools
import multiprocessing

import pytest

from engine.config import EngineConfig
from engine.core import EngineLoop
from engine.llm_engine import LLMEngine
from engine.messages import AddRequest, decode_from_engine, encode
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


def test_the_engine_loop_abandons_a_step_for_an_arrival_that_outranks_it(tiny_model_dir):
    """What arrives in the engine process's pipe during a step is read between layers: an arrival that outranks
    the step abandons it and starts next, alone; one that does not waits for the step's end."""
    engine = LLMEngine(EngineConfig(model=str(tiny_model_dir("llama")), dtype="float32", kv_cache_bytes=4 << 20))
    engine.eos_token_ids = set()
    inbox, to_engine = multiprocessing.Pipe(duplex=False)
    from_engine, outbox = multiprocessing.Pipe(duplex=False)
    loop = EngineLoop(engine, inbox, outbox)

    def request(request_id: str, priority: int) -> AddRequest:
        return AddRequest(GenerateRequest(request_id=request_id, prompt_token_ids=[5, 6, 7],
                                          params=SamplingParams(temperature=0.0, max_tokens=4), priority=priority))

    def two_steps_with_arrival(msg: AddRequest) -> list[list[str]]:
        """Who produced output in the step the message arrived during, then in the next one."""
        to_engine.send_bytes(encode(msg))  # lands while the step runs: the first layer's check sees it
        loop._step()
        for deferred in loop._messages():
            loop._handle(deferred)
        loop._step()
        sent = []
        while from_engine.poll():
            sent.append(sorted(o.request_id for o in decode_from_engine(from_engine.recv_bytes()).outputs))
        return sent

    engine.add_request(request("free", 1).request)
    loop._step()  # the free request's prefill
    from_engine.recv_bytes()
    # A batch arrival outranks nothing: the free step runs to its end, then both run.
    assert two_steps_with_arrival(request("batch", 2)) == [["free"], ["batch", "free"]]
    assert engine.num_interrupted_steps == 0
    # A paid one: the step under way is abandoned (no output), then the paid request runs alone.
    assert two_steps_with_arrival(request("paid", 0)) == [["paid"]]
    assert engine.num_interrupted_steps == 1
