"""Engine timing events: recorded in the step loop, shipped (wall clock) with each request's finished output."""

import time

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import GenerateRequest, SamplingParams, merge_outputs
from tests.engine.test_priority import kv_bytes


def _engine(tiny_model_dir, **overrides) -> LLMEngine:
    from transformers import AutoConfig

    model_dir = tiny_model_dir("qwen2")
    config = dict(model=str(model_dir), dtype="float32", block_size=8, max_num_batched_tokens=16, max_num_seqs=8,
                  kv_cache_bytes=kv_bytes(64, AutoConfig.from_pretrained(model_dir)))
    engine = LLMEngine(EngineConfig(**config | overrides))
    engine.eos_token_ids = set()
    return engine


def _run(engine: LLMEngine) -> dict:
    merged = {}
    while engine.has_unfinished():
        for out in engine.step():
            # Only the finished output carries events, so streams pay nothing per token.
            assert (out.events is not None) == out.finished
            merged[out.request_id] = merge_outputs(merged.get(out.request_id), out)
    return merged


def test_chunked_prefill_first_token_and_finish_in_order(tiny_model_dir):
    engine = _engine(tiny_model_dir)
    before = time.time_ns()
    engine.add_request(GenerateRequest(request_id="r", prompt_token_ids=[7] * 40,
                                       params=SamplingParams(temperature=0.0, max_tokens=5, n=2)))
    out = _run(engine)["r"]
    after = time.time_ns()
    events = out.events
    names = [e.name for e in events]
    assert names[0] == "queued" and names[-1] == "finished"
    times = [e.time_unix_nano for e in events]
    assert times == sorted(times) and before <= times[0] and times[-1] <= after  # wall clock, not monotonic
    for index in (0, 1):
        mine = [e.name for e in events if e.index == index and e.name != "queued"]
        assert mine[0] == "scheduled"
        assert mine.count("first_token") == 1 and mine.count("finished") == 1
    # 40 prompt tokens under a 16-token budget: completion 0 prefills in three chunks that add up to the prompt.
    chunks = [e for e in events if e.name == "prefill" and e.index == 0]
    assert len(chunks) == 3 and sum(e.num_tokens for e in chunks) == 40
    assert all(e.duration_ns > 0 for e in chunks)
    first_token = next(e for e in events if e.name == "first_token" and e.index == 0)
    assert chunks[-1].time_unix_nano <= first_token.time_unix_nano


def test_preempted_and_resumed(tiny_model_dir):
    from transformers import AutoConfig

    engine = _engine(tiny_model_dir, max_num_batched_tokens=64,
                     kv_cache_bytes=kv_bytes(16, AutoConfig.from_pretrained(tiny_model_dir("qwen2"))))
    long = SamplingParams(temperature=0.0, max_tokens=40)
    for i in range(4):
        engine.add_request(GenerateRequest(request_id=f"free-{i}", prompt_token_ids=[5 + i] * 20, params=long,
                                           priority=10))
    for _ in range(3):
        engine.step()
    engine.add_request(GenerateRequest(request_id="paid", prompt_token_ids=[9] * 30,
                                       params=SamplingParams(temperature=0.0, max_tokens=20), priority=0))
    outs = _run(engine)
    names = [e.name for out in outs.values() if out.events for e in out.events]
    assert names.count("preempted") == engine.scheduler.num_preemptions > 0
    assert names.count("resumed") == names.count("preempted")
    for out in outs.values():
        seq_names = [e.name for e in out.events]
        for i, name in enumerate(seq_names):
            if name == "resumed":
                assert "preempted" in seq_names[:i]
