"""/v1/batches: OpenAI's Batch API objects."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

from gateway.schemas.jobs import BulkEndpoint, JobCounts, JobErrors, Metadata

BatchStatus = Literal[
    "validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled"
]


class BatchCreate(msgspec.Struct, kw_only=True):
    input_file_id: str
    endpoint: BulkEndpoint
    completion_window: Literal["24h"] = "24h"
    metadata: Metadata | None = None
    # flowgate's (`extra_body` in OpenAI's SDKs): a signed webhook when the batch ends; default: the key's.
    callback_url: Annotated[str, Meta(max_length=2048)] | None = None


class Batch(msgspec.Struct, kw_only=True):
    id: str
    object: Literal["batch"] = "batch"
    endpoint: str
    errors: JobErrors | None
    input_file_id: str | None
    completion_window: str
    status: BatchStatus
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    in_progress_at: int | None
    expires_at: int | None
    finalizing_at: int | None
    completed_at: int | None
    failed_at: int | None
    expired_at: int | None
    cancelling_at: int | None
    cancelled_at: int | None
    request_counts: JobCounts
    metadata: dict[str, str] | None
    trace_id: str | None  # flowgate's: the batch's trace when tracing is on (SDKs keep unknown fields)


class BatchList(msgspec.Struct, kw_only=True):
    object: Literal["list"] = "list"
    data: list[Batch]
    first_id: str | None
    last_id: str | None
    has_more: bool
