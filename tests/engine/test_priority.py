"""Priority scheduling: a more important request preempts less important ones when blocks run out."""

from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import GenerateRequest, SamplingParams


def kv_bytes(engine_blocks: int, config) -> int:
    head_dim = config.hidden_size // config.num_attention_heads
    return engine_blocks * 2 * config.num_hidden_layers * 8 * config.num_key_value_heads * head_dim * 4


def test_high_priority_request_preempts_and_finishes_first(tiny_model_dir):
    from transformers import AutoConfig

    model_dir = tiny_model_dir("qwen2")
    config = AutoConfig.from_pretrained(model_dir)
    engine = LLMEngine(
        EngineConfig(
            model=str(model_dir),
            dtype="float32",
            block_size=8,
            kv_cache_bytes=kv_bytes(16, config),
            max_num_batched_tokens=64,
            max_num_seqs=8,
        )
    )
    engine.eos_token_ids = set()
    long = SamplingParams(temperature=0.0, max_tokens=40)
    for i in range(4):
        engine.add_request(
            GenerateRequest(request_id=f"free-{i}", prompt_token_ids=[5 + i] * 20, params=long, priority=10)
        )
    for _ in range(3):
        engine.step()
    assert len(engine.scheduler.running) == 4
    engine.add_request(
        GenerateRequest(
            request_id="paid",
            prompt_token_ids=[9] * 30,
            params=SamplingParams(temperature=0.0, max_tokens=20),
            priority=0,
        )
    )
    finished_order = []
    while engine.has_unfinished():
        finished_order += [o.request_id for o in engine.step() if o.finished]
        engine.kv.pool.check_integrity()
    assert finished_order[0] == "paid"
    assert engine.scheduler.num_preemptions > 0
    assert sorted(finished_order) == sorted(["paid", "free-0", "free-1", "free-2", "free-3"])


def test_fcfs_within_a_priority(tiny_model_dir):
    engine = LLMEngine(
        EngineConfig(model=str(tiny_model_dir("qwen2")), block_size=8, max_num_seqs=1, kv_cache_bytes=1 << 20)
    )
    engine.eos_token_ids = set()
    for i in range(3):
        engine.add_request(
            GenerateRequest(
                request_id=str(i),
                prompt_token_ids=[7, 8, 9],
                params=SamplingParams(temperature=0.0, max_tokens=3),
                arrival_time=float(i),
            )
        )
    order = []
    while engine.has_unfinished():
        order += [o.request_id for o in engine.step() if o.finished]
    assert order == ["0", "1", "2"]


def test_request_that_can_never_fit_is_rejected(tiny_model_dir):
    import pytest

    from engine.errors import InvalidRequest

    engine = LLMEngine(EngineConfig(model=str(tiny_model_dir("qwen2")), block_size=8, kv_cache_bytes=1 << 16))
    with pytest.raises(InvalidRequest, match="could never run"):
        engine.add_request(
            GenerateRequest(
                request_id="huge", prompt_token_ids=[5] * 200, params=SamplingParams(max_tokens=500)
            )
        )
