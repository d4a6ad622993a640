"""/v1/jobs: submit many requests at once, poll, page through results, cancel. Jobs belong to their key."""

from __future__ import annotations

from typing import Annotated

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter

from gateway.auth import Identity
from gateway.bulk import (
    callback_url,
    check_size,
    digest,
    error_list,
    job_not_found,
    owned_file_lines,
    parse_jsonl,
    result_progress,
    validate_lines,
    window_seconds,
)
from gateway.errors import ApiError
from gateway.routes.errors import ERROR_RESPONSES
from gateway.schemas.jobs import JobCounts, JobCreate, JobList, JobObject, ResultLine, ResultPage
from workers.jobs import JobService
from workers.records import Job

Limit = Annotated[int, QueryParameter(ge=1, le=1000)]


class JobsController(Controller):
    path = "/v1/jobs"
    tags = ("jobs",)

    @post(status_code=202, sync_to_thread=True, responses=ERROR_RESPONSES,
          summary="Submit a bulk job (inline `requests` or an uploaded `input_file_id`); 202 with its Location")
    def create(
        self, data: JSONBody[JobCreate], identity: NamedDependency[Identity], jobs: NamedDependency[JobService], state: State,
        request: Request,
        idempotency_key: Annotated[str | None, HeaderParameter(name="Idempotency-Key", max_length=256)] = None,
    ) -> Response[JobObject]:
        if (data.requests is None) == (data.input_file_id is None):
            raise ApiError(400, "Give exactly one of `requests` and `input_file_id`.", param="requests")
        callback = callback_url(data.callback_url, request, jobs.settings)
        if data.requests is not None:
            check_size(jobs.settings, len(data.requests), len(msgspec.json.encode(data.requests)))
            items = ((n, msgspec.to_builtins(line)) for n, line in enumerate(data.requests, start=1))
            lines, issues = validate_lines(items, data.endpoint, state.served_model_names, batch_format=False)
        else:
            content = owned_file_lines(jobs, data.input_file_id, identity.key_id)
            check_size(jobs.settings, content.count(b"\n") + 1, len(content))
            lines, issues = validate_lines(parse_jsonl(content), data.endpoint, state.served_model_names,
                                           batch_format=True)
        if issues:
            first = issues[0]
            more = f" ({len(issues) - 1} more problems)" if len(issues) > 1 else ""
            raise ApiError(400, first.message + more, code=first.code, param=f"requests[{first.line - 1}]"
                           if data.requests is not None else "input_file_id")
        job = jobs.submit(
            owner=identity.key_id, face="job", endpoint=data.endpoint, lines=lines,
            window_s=window_seconds(data.completion_window), window_label=data.completion_window,
            metadata=data.metadata, callback_url=callback, input_file_id=data.input_file_id,
            idempotency_key=idempotency_key, digest=digest(msgspec.to_builtins(data)),
        )
        return Response(job_object(job), status_code=202, headers={"Location": f"/v1/jobs/{job.id}"})

    @get(sync_to_thread=True, summary="List your jobs, newest first")
    def list_jobs(self, identity: NamedDependency[Identity], jobs: NamedDependency[JobService], after: FromQuery[str | None] = None,
                  limit: Limit = 20) -> JobList:
        found, more = jobs.list(identity.key_id, face="job", after=after, limit=limit)
        data = [job_object(job) for job in found]
        return JobList(data=data, first_id=data[0].id if data else None, last_id=data[-1].id if data else None,
                       has_more=more)

    @get("/{job_id:str}", sync_to_thread=True, summary="A job's status, counts and progress")
    def retrieve(self, job_id: FromPath[str], identity: NamedDependency[Identity], jobs: NamedDependency[JobService]) -> JobObject:
        return job_object(_owned(jobs, job_id, identity))

    @get("/{job_id:str}/results", sync_to_thread=True,
         summary="Results so far (also while running): JSON pages (`after`, `limit`) or `format=jsonl`")
    def results(self, job_id: FromPath[str], identity: NamedDependency[Identity], jobs: NamedDependency[JobService],
                after: FromQuery[str | None] = None, limit: Limit = 100,
                format: Annotated[str, QueryParameter(pattern="^(json|jsonl)$")] = "json") -> ResultPage | Response:
        job = _owned(jobs, job_id, identity)
        if format == "jsonl":
            body = b"".join(msgspec.json.encode(o) + b"\n" for o in jobs.ledger.all_outcomes(job.id))
            return Response(body, media_type="application/jsonl")
        outcomes, more = jobs.ledger.outcomes_page(job.id, after=after, limit=limit)
        data = [msgspec.convert(msgspec.to_builtins(o), ResultLine) for o in outcomes]
        return ResultPage(data=data, first_id=data[0].custom_id if data else None,
                          last_id=data[-1].custom_id if data else None, has_more=more,
                          job_status=job_object(job).status)

    @post("/{job_id:str}/cancel", status_code=200, sync_to_thread=True,
          summary="Cancel: pending lines end as `batch_cancelled` errors, finished ones are kept")
    def cancel(self, job_id: FromPath[str], identity: NamedDependency[Identity], jobs: NamedDependency[JobService]) -> JobObject:
        job = jobs.cancel(job_id, identity.key_id)
        if job is None:
            raise job_not_found(job_id)
        return job_object(job)


def _owned(jobs: JobService, job_id: FromPath[str], identity: NamedDependency[Identity]) -> Job:
    job = jobs.get(job_id, identity.key_id)
    if job is None or job.face != "job":
        raise job_not_found(job_id)
    return job


def job_object(job: Job) -> JobObject:
    return JobObject(
        id=job.id, status="in_progress" if job.status == "finalizing" else job.status, endpoint=job.endpoint,
        counts=JobCounts(total=job.total, completed=job.completed, failed=job.failed),
        progress=result_progress(job), created_at=job.created_at, expires_at=job.expires_at,
        in_progress_at=job.in_progress_at, completed_at=job.completed_at, failed_at=job.failed_at,
        cancelled_at=job.cancelled_at, expired_at=job.expired_at, completion_window=job.completion_window,
        metadata=job.metadata, callback_url=job.callback_url, input_file_id=job.input_file_id,
        errors=error_list(job.errors), results_url=f"/v1/jobs/{job.id}/results",
        trace_id=job.trace_id,
    )
