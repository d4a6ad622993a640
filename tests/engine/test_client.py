"""The async client against a real engine process serving the bundled model."""

import asyncio

import pytest

from engine.client import AsyncEngine
from engine.config import EngineConfig
from engine.errors import ContextLengthExceeded, InvalidRequest
from engine.protocol import GenerateRequest, GuidedDecoding, SamplingParams, merge_outputs

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(scope="module")
async def engine(bundled_model_dir):
    engine = await AsyncEngine.start(
        EngineConfig(model=str(bundled_model_dir), dtype="float32", kv_cache_bytes=64 << 20, max_model_len=2048)
    )
    yield engine
    await engine.shutdown()


async def collect(engine, request):
    merged, deltas = None, []
    async for out in engine.generate(request):
        deltas.append(out)
        merged = merge_outputs(merged, out)
    return merged, deltas


def chat(engine, text):
    return engine.tokenizer.apply_chat_template([{"role": "user", "content": text}])


async def test_streams_deltas_that_add_up(engine):
    request = GenerateRequest(
        request_id="stream",
        prompt=chat(engine, "Name three colors."),
        params=SamplingParams(temperature=0.0, max_tokens=20),
    )
    merged, deltas = await collect(engine, request)
    assert len(deltas) > 1 and deltas[-1].finished and not any(d.finished for d in deltas[:-1])
    completion = merged.outputs[0]
    assert completion.text == "".join(c.text for d in deltas for c in d.outputs)
    assert completion.finish_reason in ("stop", "length")
    assert engine.tokenizer.decode(completion.token_ids) == completion.text
    assert merged.num_prompt_tokens == len(engine.tokenizer.encode(request.prompt))


async def test_same_seed_same_output_whatever_else_runs(engine):
    params = SamplingParams(temperature=1.0, top_p=0.9, seed=1234, max_tokens=24)
    prompt = chat(engine, "Write a sentence about the sea.")
    alone, _ = await collect(engine, GenerateRequest(request_id="seed-alone", prompt=prompt, params=params))
    noise = [
        collect(
            engine,
            GenerateRequest(
                request_id=f"noise-{i}",
                prompt=chat(engine, f"Count to {i}."),
                params=SamplingParams(temperature=1.0, max_tokens=30),
            ),
        )
        for i in range(5)
    ]
    crowded, *_ = await asyncio.gather(
        collect(engine, GenerateRequest(request_id="seed-crowd", prompt=prompt, params=params)), *noise
    )
    assert crowded[0].outputs[0].token_ids == alone.outputs[0].token_ids


async def test_n_completions_with_logprobs(engine):
    params = SamplingParams(n=3, temperature=1.0, seed=7, max_tokens=8, logprobs=2)
    merged, _ = await collect(
        engine, GenerateRequest(request_id="n3", prompt=chat(engine, "Hi!"), params=params)
    )
    assert [c.index for c in merged.outputs] == [0, 1, 2]
    for c in merged.outputs:
        assert len(c.logprobs) == len(c.token_ids)
        for lp, token in zip(c.logprobs, c.token_ids, strict=True):
            assert lp.token_id == token and lp.logprob <= 0.0 and len(lp.top) == 2
            assert lp.top[0].logprob >= lp.top[1].logprob and lp.logprob <= lp.top[0].logprob + 1e-6
    assert len({tuple(c.token_ids) for c in merged.outputs}) > 1, "sampled completions should differ"


async def test_stop_strings_are_trimmed(engine):
    params = SamplingParams(temperature=0.0, max_tokens=40, stop=["Paris"])
    merged, _ = await collect(
        engine,
        GenerateRequest(
            request_id="stop", prompt=chat(engine, "What is the capital of France?"), params=params
        ),
    )
    completion = merged.outputs[0]
    assert completion.finish_reason == "stop" and completion.stop_reason == "Paris"
    assert "Paris" not in completion.text


async def test_errors_reach_the_caller(engine):
    with pytest.raises(ContextLengthExceeded, match="2048"):
        await collect(
            engine,
            GenerateRequest(
                request_id="too-long", prompt="hello " * 100, params=SamplingParams(max_tokens=4000)
            ),
        )
    with pytest.raises(InvalidRequest) as err:
        await collect(engine, GenerateRequest(request_id="bad", prompt="x", params=SamplingParams(top_p=0.0)))
    assert err.value.param == "top_p"
    assert engine.is_alive()


async def test_leaving_the_stream_aborts_and_frees_blocks(engine):
    request = GenerateRequest(
        request_id="abandon",
        prompt=chat(engine, "Tell me a long story."),
        params=SamplingParams(temperature=0.0, max_tokens=500, ignore_eos=True),
    )
    stream = engine.generate(request)
    async for _ in stream:
        break
    await stream.aclose()
    for _ in range(50):
        stats = await engine.stats()
        if stats.num_running == 0 and stats.kv_blocks_used == 0:
            break
        await asyncio.sleep(0.1)
    assert stats.num_running == 0 and stats.num_waiting == 0 and stats.kv_blocks_used == 0


async def test_prefix_cache_reports_cached_tokens(engine):
    system = "You are the assistant of a workflow tool. Keep answers short. " * 8
    prompt = engine.tokenizer.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": "Hello"}]
    )
    params = SamplingParams(temperature=0.0, max_tokens=2)
    first, _ = await collect(engine, GenerateRequest(request_id="pc-1", prompt=prompt, params=params))
    second, _ = await collect(engine, GenerateRequest(request_id="pc-2", prompt=prompt, params=params))
    assert first.num_cached_tokens == 0
    assert second.num_cached_tokens >= first.num_prompt_tokens - 16
    assert second.outputs[0].token_ids == first.outputs[0].token_ids


async def test_a_grammar_compiles_beside_running_requests(engine):
    """A fresh, slow-to-compile schema must not stall the step loop: a running stream keeps getting tokens
    while the guided request waits for its grammar."""
    schema = '{"type": "object", "properties": {"note": {"type": "string", "maxLength": 150}}, "required": ["note"]}'
    guided = GenerateRequest(
        request_id="guided-slow",
        prompt=chat(engine, "Write a note as JSON."),
        params=SamplingParams(
            temperature=0.0, max_tokens=8, guided=GuidedDecoding(kind="json_schema", spec=schema)
        ),
    )
    plain = GenerateRequest(
        request_id="plain-during-compile",
        prompt=chat(engine, "Tell me a long story."),
        params=SamplingParams(temperature=0.0, max_tokens=400, ignore_eos=True),
    )
    tokens_before_guided_output, guided_started = 0, asyncio.Event()

    async def run_plain():
        nonlocal tokens_before_guided_output
        async for out in engine.generate(plain):
            if not guided_started.is_set():
                tokens_before_guided_output += sum(len(c.token_ids) for c in out.outputs)
            if guided_started.is_set() and tokens_before_guided_output:
                break

    async def run_guided():
        async for out in engine.generate(guided):
            if out.outputs and out.outputs[0].token_ids:
                guided_started.set()

    plain_task = asyncio.create_task(run_plain())
    await asyncio.sleep(0.5)  # the plain request is decoding
    tokens_at_submit = tokens_before_guided_output
    await run_guided()
    await plain_task
    assert guided_started.is_set()
    assert tokens_before_guided_output - tokens_at_submit >= 5


async def test_a_request_that_cannot_be_sent_fails_alone(engine):
    """Encoding happens on the caller's side: the writer thread every later request depends on stays alive."""
    bad = GenerateRequest(request_id="unencodable", prompt_token_ids=[2**70], params=SamplingParams(max_tokens=1))
    with pytest.raises(InvalidRequest):
        await collect(engine, bad)
    merged, _ = await collect(engine, GenerateRequest(request_id="after-unencodable", prompt=chat(engine, "Hi"),
                                                      params=SamplingParams(temperature=0.0, max_tokens=2)))
    assert merged.finished
