"""/v1/jobs: the REST submit/poll face of bulk work (what n8n's HTTP Request node calls)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

CustomId = Annotated[str, Meta(min_length=1, max_length=512)]
Metadata = Annotated[dict[str, Annotated[str, Meta(max_length=512)]], Meta(max_length=16)]
CompletionWindow = Annotated[str, Meta(pattern=r"^[1-9][0-9]{0,5}[smhd]$")]
BulkEndpoint = Literal["/v1/chat/completions", "/v1/completions"]


class JobLine(msgspec.Struct, kw_only=True):
    custom_id: CustomId
    body: dict[str, Any]


class JobCreate(msgspec.Struct, kw_only=True):
    requests: list[JobLine] | None = None  # inline lines, or:
    input_file_id: str | None = None  # a JSONL file uploaded to /v1/files (Batch API line format)
    endpoint: BulkEndpoint = "/v1/chat/completions"
    metadata: Metadata | None = None
    callback_url: Annotated[str, Meta(max_length=2048)] | None = None
    completion_window: CompletionWindow = "24h"


class JobCounts(msgspec.Struct, kw_only=True):
    total: int
    completed: int
    failed: int


class JobErrorItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    code: str
    message: str
    line: int | None = None
    param: str | None = None


class JobErrors(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[JobErrorItem]


JobStatus = Literal["queued", "in_progress", "completed", "failed", "cancelling", "cancelled", "expired"]


class JobObject(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    endpoint: str
    counts: JobCounts
    progress: float  # lines with an outcome / total, 0-1
    created_at: int
    expires_at: int
    in_progress_at: int | None
    completed_at: int | None
    failed_at: int | None
    cancelled_at: int | None
    expired_at: int | None
    completion_window: str
    metadata: dict[str, str] | None
    callback_url: str | None
    input_file_id: str | None
    errors: JobErrors | None
    results_url: str
    trace_id: str | None  # the job's trace (32 hex digits) when tracing is on: submit, chunks, lines, webhook


class ResultLine(msgspec.Struct, kw_only=True):
    """One line's outcome, in OpenAI's batch output line format: `response` or `error` (a 4xx from the model
    endpoint has both: the error and the response it came in)."""

    id: str
    custom_id: str
    response: dict[str, Any] | None
    error: dict[str, Any] | None


class ResultPage(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[ResultLine]
    first_id: str | None
    last_id: str | None  # pass as `after` for the next page
    has_more: bool
    job_status: JobStatus


class JobList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[JobObject]
    first_id: str | None
    last_id: str | None
    has_more: bool
