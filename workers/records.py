"""What the ledger stores and hands out: a job's record, an input line, a line's outcome (msgspec Structs)."""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Face = Literal["job", "batch"]  # the REST submit/poll API, or OpenAI's Batch API: one job model behind both
Status = Literal["queued", "in_progress", "finalizing", "completed", "failed", "cancelling", "cancelled", "expired"]
TERMINAL = frozenset({"completed", "failed", "cancelled", "expired"})
ACTIVE = frozenset({"queued", "in_progress", "finalizing", "cancelling"})


class InputLine(msgspec.Struct, array_like=True):
    custom_id: str
    body: dict[str, Any]


class LineError(msgspec.Struct):
    code: str
    message: str


class LineResponse(msgspec.Struct):
    status_code: int
    request_id: str
    body: dict[str, Any]


class Outcome(msgspec.Struct):
    """One line's end, in OpenAI's batch output/error file line format (written once per (job, custom_id))."""

    id: str
    custom_id: str
    response: LineResponse | None
    error: LineError | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.response is not None and self.response.status_code == 200


class ValidationIssue(msgspec.Struct, omit_defaults=True):
    code: str
    message: str
    line: int | None = None
    param: str | None = None


class Job(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    face: Face
    owner: str
    status: Status
    endpoint: str
    total: int
    completed: int = 0
    failed: int = 0
    chunk_size: int
    num_chunks: int
    created_at: int
    expires_at: int
    completion_window: str = "24h"
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    expired_at: int | None = None
    updated_at: int | None = None
    expiring: int = 0  # set when the deadline passed: the job ends `expired`
    metadata: dict[str, str] | None = None
    callback_url: str | None = None
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: list[ValidationIssue] | None = None
    # W3C traceparent of the job's submit span: every task of the job is published in this trace.
    traceparent: str | None = None

    @property
    def trace_id(self) -> str | None:
        return self.traceparent.split("-")[1] if self.traceparent else None

    @property
    def done(self) -> int:
        return self.completed + self.failed

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_JSON_FIELDS = ("metadata", "errors")


def job_to_hash(job: Job) -> dict[str, str]:
    raw = msgspec.to_builtins(job)
    return {k: msgspec.json.encode(v).decode() if k in _JSON_FIELDS else str(v) for k, v in raw.items()}


def job_from_hash(raw: dict[str, str]) -> Job:
    values: dict[str, Any] = {k: v for k, v in raw.items() if k not in _JSON_FIELDS}
    for name in _JSON_FIELDS:
        if raw.get(name):
            values[name] = msgspec.json.decode(raw[name])
    return msgspec.convert(values, Job, strict=False)
