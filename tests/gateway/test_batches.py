"""OpenAI's Batch API (files + batches) against the real server, through the official openai SDK."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

MODEL = "smollm2-135m"


def batch_line(custom_id: str, text: str = "Say hi", **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 2} | body}


def upload(client, lines: list, name: str = "input.jsonl"):
    content = "\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines).encode() + b"\n"
    return client.files.create(file=(name, io.BytesIO(content)), purpose="batch")


def wait_batch(client, batch_id: str, timeout: float = 240):
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        assert time.monotonic() < deadline, batch
        time.sleep(0.5)


def read_lines(client, file_id: str | None) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines() if x]


def test_batch_round_trip_with_output_and_error_files(client, server):
    lines = [batch_line(f"b{i}", f"Name color {i}") for i in range(4)]
    lines.append(batch_line("too-long", "x " * 2000))  # valid shape, the endpoint rejects it: an error line
    uploaded = upload(client, lines)
    assert uploaded.purpose == "batch" and uploaded.bytes > 0
    assert client.files.retrieve(uploaded.id).filename == "input.jsonl"
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"run": "t"})
    assert batch.status in ("validating", "in_progress")
    batch = wait_batch(client, batch.id)
    assert batch.status == "completed", batch
    assert batch.request_counts.total == 5 and batch.request_counts.completed == 4
    assert batch.request_counts.failed == 1 and batch.metadata == {"run": "t"}
    output = {x["custom_id"]: x for x in read_lines(client, batch.output_file_id)}
    errors = {x["custom_id"]: x for x in read_lines(client, batch.error_file_id)}
    assert set(output) == {f"b{i}" for i in range(4)} and set(errors) == {"too-long"}
    for entry in output.values():
        assert entry["id"].startswith("batch_req_") and entry["error"] is None
        assert entry["response"]["status_code"] == 200
        assert entry["response"]["body"]["object"] == "chat.completion"
    assert errors["too-long"]["response"]["status_code"] == 400
    assert errors["too-long"]["error"]["code"] == "context_length_exceeded"
    assert batch.id in [b.id for b in client.batches.list(limit=100)]
    assert server.wait_idle()["kv_blocks_used"] == 0


def test_invalid_file_fails_the_batch_in_validation_naming_lines(client):
    lines = [batch_line("ok"), "{not json", {"method": "POST", "url": "/v1/chat/completions", "body": {}},
             batch_line("ok"), batch_line("w") | {"url": "/v1/embeddings"}, batch_line("m") | {"method": "GET"},
             batch_line("bad", max_tokens=-1)]
    batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    assert batch.status == "failed" and batch.request_counts.total == 0
    by_line = {e.line: e.code for e in batch.errors.data}
    assert by_line == {2: "invalid_json_line", 3: "missing_required_parameter", 4: "duplicate_custom_id",
                       5: "mismatched_url", 6: "invalid_method", 7: "invalid_request"}


def test_batch_list_pages_with_after_and_cancel(client):
    file_id = upload(client, [batch_line(f"l{i}", "Tell a long tale", max_tokens=48) for i in range(30)]).id
    ids = [client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id for _ in range(3)]
    for batch_id in ids:
        assert client.batches.cancel(batch_id).status in ("cancelling", "cancelled")
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    nxt = client.batches.list(limit=2, after=page.data[-1].id)
    assert nxt.data[0].id == ids[0]
    for batch_id in ids:
        batch = wait_batch(client, batch_id)
        assert batch.status == "cancelled"
        counts = batch.request_counts
        assert counts.total == 30 and counts.completed + counts.failed == 30
        errors = read_lines(client, batch.error_file_id)
        assert all(e["error"]["code"] == "batch_cancelled" for e in errors if e["response"] is None)


def test_files_api_errors_and_delete(client):
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_doesnotexist")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-doesnotexist", endpoint="/v1/chat/completions",
                              completion_window="24h")
    uploaded = upload(client, [batch_line("d")])
    assert uploaded.id in [f.id for f in client.files.list()]
    assert client.files.content(uploaded.id).content.startswith(b'{"custom_id"')
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.content(uploaded.id)
