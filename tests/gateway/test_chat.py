"""Chat completions through the official openai SDK: sync, async, streaming, usage, logprobs, n, caching."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.conftest import MODEL

QUESTION = [{"role": "user", "content": "Name a color."}]


def test_sync_chat_completion_has_openai_shape_and_usage(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4, temperature=0)
    assert reply.object == "chat.completion" and reply.id.startswith("chatcmpl-") and reply.model == MODEL
    [choice] = reply.choices
    assert choice.message.role == "assistant" and choice.message.content
    assert choice.message.tool_calls is None
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert 0 < usage.completion_tokens <= 4
    assert usage.prompt_tokens > len(QUESTION[0]["content"].split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert 0 <= usage.prompt_tokens_details.cached_tokens < usage.prompt_tokens


def test_system_developer_and_text_parts_are_accepted(client):
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in one word."}]},
        {"role": "user", "content": [{"type": "text", "text": "Name a "}, {"type": "text", "text": "fruit."}]},
    ]
    reply = client.chat.completions.create(model=MODEL, messages=messages, max_completion_tokens=3, temperature=0)
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens <= 3


def test_async_client_runs_concurrent_requests(async_client):
    async def ask(i: int):
        return await async_client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"Count to {i}."}], max_tokens=3, temperature=0)

    async def main():
        return await asyncio.gather(*(ask(i) for i in range(3)))

    replies = asyncio.run(main())
    assert len({r.id for r in replies}) == 3
    assert all(r.choices[0].message.content for r in replies)


def test_streaming_equals_non_streaming_for_the_same_seed(client):
    kwargs = dict(model=MODEL, messages=QUESTION, max_tokens=6, temperature=0.9, seed=1234)
    whole = client.chat.completions.create(**kwargs)
    chunks = list(client.chat.completions.create(**kwargs, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == [whole.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens


def test_stream_without_include_usage_has_no_usage(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=2, stream=True))
    assert all(c.usage is None for c in chunks)
    assert chunks[-1].choices[0].finish_reason is not None


@pytest.mark.parametrize("path, body", [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}),
    ("/v1/completions", {"prompt": "Hi", "max_tokens": 2}),
    ("/v1/responses", {"input": "Hi", "max_output_tokens": 2}),
])
def test_streams_are_served_as_event_streams(http, path, body):
    with http.stream("POST", path, json={"model": MODEL, "stream": True, **body}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        assert response.read().startswith(b"data: ") or path == "/v1/responses"  # responses: named events


def test_logprobs_in_openai_shape(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=3, temperature=0,
                                           logprobs=True, top_logprobs=2)
    choice = reply.choices[0]
    content = choice.logprobs.content
    assert len(content) == reply.usage.completion_tokens
    assert "".join(t.token for t in content) == choice.message.content
    for token in content:
        assert token.logprob <= 0 and token.bytes == list(token.token.encode())
        assert len(token.top_logprobs) == 2
        # greedy: the chosen token is the most likely one
        assert token.top_logprobs[0].token == token.token
        assert token.top_logprobs[0].logprob >= token.top_logprobs[1].logprob


def test_n_choices_and_stop(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=4, n=2, seed=7)
    assert [c.index for c in reply.choices] == [0, 1]
    greedy = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=6, temperature=0)
    text = greedy.choices[0].message.content
    stop = text[len(text) // 2:].strip()[:3]
    stopped = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=6, temperature=0, stop=stop)
    assert stopped.choices[0].finish_reason == "stop"
    assert stop not in stopped.choices[0].message.content
    assert text.startswith(stopped.choices[0].message.content)


def test_repeated_long_prompt_hits_the_prefix_cache(client, server):
    document = " ".join(f"Item {i} is {'red' if i % 2 else 'blue'}." for i in range(60))
    messages = [{"role": "user", "content": f"{document}\nWhich color is item 7?"}]
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, temperature=0)
    second = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=1, temperature=0)
    assert first.usage.prompt_tokens == second.usage.prompt_tokens > 200
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= first.usage.prompt_tokens // 2, (first.usage, second.usage)
    assert cached < second.usage.prompt_tokens  # the last prompt token is always recomputed


def test_priority_is_accepted(client):
    reply = client.chat.completions.create(model=MODEL, messages=QUESTION, max_tokens=1, extra_body={"priority": 5})
    assert reply.choices[0].message.content is not None


def test_models(client):
    [model] = client.models.list().data
    assert model.id == MODEL and model.object == "model" and model.owned_by == "flowgate"
    assert client.models.retrieve(MODEL).id == MODEL


def test_openapi_document_and_docs_page(http):
    document = http.get("/docs/openapi.json").json()
    assert {"/v1/chat/completions", "/v1/completions", "/v1/responses", "/v1/models"} <= set(document["paths"])
    page = http.get("/docs/")
    assert page.status_code == 200 and "swagger" in page.text.lower()
