"""/v1/batches: OpenAI's Batch API over the same jobs, ledger and workers as /v1/jobs."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter

from gateway.auth import Identity
from gateway.bulk import (
    callback_url,
    check_size,
    error_list,
    job_not_found,
    owned_file_lines,
    parse_jsonl,
    validate_lines,
    window_seconds,
)
from gateway.routes.errors import ERROR_RESPONSES
from gateway.schemas.batches import Batch, BatchCreate, BatchList
from gateway.schemas.jobs import JobCounts
from workers.jobs import JobService
from workers.records import Job

# Our ledger's statuses as the Batch API names them: a job no line has started yet is still `validating`.
BATCH_STATUS = {"queued": "validating"}


class BatchesController(Controller):
    path = "/v1/batches"
    tags = ("batches",)

    @post(status_code=200, sync_to_thread=True, responses=ERROR_RESPONSES,
          summary="Create a batch from an uploaded JSONL file; invalid lines fail it in `validating`")
    def create(self, data: JSONBody[BatchCreate], identity: NamedDependency[Identity], jobs: NamedDependency[JobService],
               state: State, request: Request) -> Batch:
        callback = callback_url(data.callback_url, request, jobs.settings)
        content = owned_file_lines(jobs, data.input_file_id, identity.key_id)
        check_size(jobs.settings, content.count(b"\n") + 1, len(content))
        lines, issues = validate_lines(parse_jsonl(content), data.endpoint, state.served_model_names,
                                       batch_format=True)
        job = jobs.submit(
            owner=identity.key_id, face="batch", endpoint=data.endpoint, lines=lines,
            window_s=window_seconds(data.completion_window), window_label=data.completion_window,
            metadata=data.metadata, callback_url=callback, input_file_id=data.input_file_id, errors=issues,
        )
        return batch_object(job)

    @get(sync_to_thread=True, summary="List your batches, newest first (`after` = the last id of a page)")
    def list_batches(self, identity: NamedDependency[Identity], jobs: NamedDependency[JobService], after: FromQuery[str | None] = None,
                     limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20) -> BatchList:
        found, more = jobs.list(identity.key_id, face="batch", after=after, limit=limit)
        data = [batch_object(job) for job in found]
        return BatchList(data=data, first_id=data[0].id if data else None,
                         last_id=data[-1].id if data else None, has_more=more)

    @get("/{batch_id:str}", sync_to_thread=True, summary="A batch")
    def retrieve(self, batch_id: FromPath[str], identity: NamedDependency[Identity], jobs: NamedDependency[JobService]) -> Batch:
        return batch_object(_owned(jobs, batch_id, identity))

    @post("/{batch_id:str}/cancel", status_code=200, sync_to_thread=True, summary="Cancel a batch")
    def cancel(self, batch_id: FromPath[str], identity: NamedDependency[Identity], jobs: NamedDependency[JobService]) -> Batch:
        _owned(jobs, batch_id, identity)
        job = jobs.cancel(batch_id, identity.key_id)
        if job is None:
            raise job_not_found(batch_id, "batch")
        return batch_object(job)


def _owned(jobs: JobService, batch_id: FromPath[str], identity: NamedDependency[Identity]) -> Job:
    job = jobs.get(batch_id, identity.key_id)
    if job is None or job.face != "batch":
        raise job_not_found(batch_id, "batch")
    return job


def batch_object(job: Job) -> Batch:
    return Batch(
        id=job.id, endpoint=job.endpoint, errors=error_list(job.errors), input_file_id=job.input_file_id,
        completion_window=job.completion_window, status=BATCH_STATUS.get(job.status, job.status),
        output_file_id=job.output_file_id, error_file_id=job.error_file_id, created_at=job.created_at,
        in_progress_at=job.in_progress_at, expires_at=job.expires_at, finalizing_at=job.finalizing_at,
        completed_at=job.completed_at, failed_at=job.failed_at, expired_at=job.expired_at,
        cancelling_at=job.cancelling_at, cancelled_at=job.cancelled_at,
        request_counts=JobCounts(total=job.total, completed=job.completed, failed=job.failed),
        metadata=job.metadata, trace_id=job.trace_id,
    )
