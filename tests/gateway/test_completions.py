"""The legacy /v1/completions API through the openai SDK."""

from __future__ import annotations

from engine.assets import model_path
from engine.tokenizer import Tokenizer
from tests.gateway.conftest import MODEL


def test_text_prompt(client):
    reply = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=3, temperature=0)
    assert reply.object == "text_completion" and reply.id.startswith("cmpl-")
    [choice] = reply.choices
    assert choice.text and choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= 3
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_batch_prompts_n_and_echo(client):
    text = "The capital of France is"
    echoed = client.completions.create(model=MODEL, prompt=text, max_tokens=1, temperature=0, echo=True)
    batch = client.completions.create(model=MODEL, prompt=[text, "One, two,"], max_tokens=2, temperature=0, n=2)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert batch.choices[0].text == batch.choices[1].text  # greedy: both choices of a prompt agree
    assert echoed.choices[0].text.startswith(text) and len(echoed.choices[0].text) > len(text)
    assert 4 <= batch.usage.completion_tokens <= 8


def test_streaming_equals_non_streaming_with_logprobs(client):
    kwargs = dict(model=MODEL, prompt="Once upon a time", max_tokens=5, temperature=0.8, seed=3, logprobs=2)
    whole = client.completions.create(**kwargs)
    chunks = list(client.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == whole.choices[0].text
    streamed_tokens = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.tokens]
    assert streamed_tokens == whole.choices[0].logprobs.tokens
    assert "".join(whole.choices[0].logprobs.tokens) == whole.choices[0].text
    offsets = whole.choices[0].logprobs.text_offset
    assert offsets[0] == 0 and offsets == sorted(offsets)
    assert all(len(top) == 2 for top in whole.choices[0].logprobs.top_logprobs)
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_token_id_prompt_matches_the_text_prompt(client):
    prompt = "Hello, my name is"
    ids = Tokenizer.from_dir(model_path(MODEL)).encode(prompt)
    from_text = client.completions.create(model=MODEL, prompt=prompt, max_tokens=3, temperature=0)
    from_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=3, temperature=0)
    assert from_ids.usage.prompt_tokens == from_text.usage.prompt_tokens == len(ids)
    assert from_ids.choices[0].text == from_text.choices[0].text
