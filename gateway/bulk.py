"""What the jobs and batches routes share: line validation with line numbers, limits, the job service
dependency and the recovery sweep in the app's lifespan."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar.datastructures import State

from gateway.auth.keys import KeyRecord
from gateway.auth.middleware import RECORD_KEY
from gateway.errors import ApiError
from gateway.schemas.chat import ChatCompletionRequest
from gateway.schemas.completions import CompletionRequest
from gateway.schemas.jobs import JobErrorItem, JobErrors
from workers.config import WorkerSettings
from workers.jobs import JobService
from workers.records import InputLine, Job, ValidationIssue
from workers.webhooks import BlockedDestination, check_url

logger = logging.getLogger("flowgate.gateway")

BODY_SCHEMAS = {"/v1/chat/completions": ChatCompletionRequest, "/v1/completions": CompletionRequest}
RECOVERY_INTERVAL_S = float(os.environ.get("FLOWGATE_BULK_RECOVERY_INTERVAL_S", "15"))
WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@asynccontextmanager
async def bulk_lifespan(app: Litestar) -> AsyncIterator[None]:
    """The job service (when Redis answers) and a periodic recovery sweep of unfinished jobs."""
    settings = WorkerSettings.from_env()
    app.state.jobs = None
    try:
        service = JobService(settings, patient=False)
        await asyncio.to_thread(service.ledger.r.ping)
        app.state.jobs = service
    except Exception as exc:  # the online API works without Redis; bulk routes answer 503
        logger.warning("bulk jobs are unavailable: Redis at the configured URL did not answer (%s)",
                       type(exc).__name__)
        yield
        return
    task = asyncio.create_task(_recovery_loop(service))
    try:
        yield
    finally:
        task.cancel()


async def _recovery_loop(service: JobService) -> None:
    # An embedded worker starts with this gateway: chunks a previous one held are not coming back on their own.
    republish_all = os.environ.get("FLOWGATE_BULK_EMBEDDED") == "1"
    while True:
        try:
            await asyncio.to_thread(service.recover, republish_all=republish_all)
            republish_all = False
        except Exception:
            logger.exception("bulk recovery sweep failed; retrying")
        await asyncio.sleep(RECOVERY_INTERVAL_S)


def provide_jobs(state: State) -> JobService:
    service = state.get("jobs")
    if service is None:
        raise ApiError(503, "Bulk jobs are unavailable: the job store (Redis) is not reachable.",
                       code="bulk_unavailable")
    return service


def callback_url(given: str | None, request: Request, settings: WorkerSettings) -> str | None:
    """The body's callback_url, else the key's default (`flowgate keys set-callback-url`), checked the same
    way: its shape here, its resolved addresses at every delivery."""
    record: KeyRecord | None = request.scope.get(RECORD_KEY)
    url = given if given is not None or record is None else record.callback_url
    if url is not None:
        try:
            check_url(url, settings, resolve=False)
        except BlockedDestination as exc:
            whose = "" if given is not None else " (this key's default callback_url)"
            raise ApiError(400, f"{exc}{whose}", param="callback_url") from exc
    return url


def window_seconds(window: str) -> int:
    return int(window[:-1]) * WINDOW_UNITS[window[-1]]


def digest(payload: Any) -> str:
    return hashlib.sha256(msgspec.json.encode(payload, order="sorted")).hexdigest()


def validate_lines(
    items: Iterable[tuple[int, Any]], endpoint: str, served_models: tuple[str, ...], *, batch_format: bool
) -> tuple[list[InputLine], list[ValidationIssue]]:
    """Check every line as its endpoint would (the body's schema and model), numbering lines from 1.

    `batch_format`: lines are OpenAI batch input lines ({custom_id, method, url, body}); else {custom_id, body}."""
    schema = BODY_SCHEMAS[endpoint]
    lines: list[InputLine] = []
    issues: list[ValidationIssue] = []
    seen: set[str] = set()
    for number, item in items:
        def bad(code: str, message: str, param: str | None = None, number: int = number) -> None:
            issues.append(ValidationIssue(code=code, message=message, line=number, param=param))

        if not isinstance(item, dict):
            bad("invalid_json_line", f"Line {number} is not a JSON object.")
            continue
        custom_id = item.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            bad("missing_required_parameter", f"Line {number} has no `custom_id` string.", "custom_id")
            continue
        if custom_id in seen:
            bad("duplicate_custom_id", f"Line {number} repeats custom_id {custom_id!r}.", "custom_id")
            continue
        seen.add(custom_id)
        if batch_format:
            if item.get("method") != "POST":
                bad("invalid_method", f"Line {number}: `method` must be POST.", "method")
                continue
            if item.get("url") != endpoint:
                bad("mismatched_url", f"Line {number}: `url` must be the batch's endpoint {endpoint}.", "url")
                continue
        body = item.get("body")
        if not isinstance(body, dict):
            bad("invalid_request", f"Line {number}: `body` must be a JSON object.", "body")
            continue
        try:
            request = msgspec.convert(body, schema)
        except msgspec.ValidationError as exc:
            bad("invalid_request", f"Line {number}: invalid body: {exc}", "body")
            continue
        if request.model not in served_models:
            bad("model_not_found", f"Line {number}: the model `{request.model}` does not exist.", "body.model")
            continue
        if request.stream:
            bad("invalid_request", f"Line {number}: `stream` is not supported in bulk jobs.", "body.stream")
            continue
        lines.append(InputLine(custom_id=custom_id, body=body))
    return lines, issues


def parse_jsonl(content: bytes) -> Iterable[tuple[int, Any]]:
    """(line number, decoded JSON or None when the line is not JSON), blank lines skipped."""
    for number, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            yield number, msgspec.json.decode(raw)
        except msgspec.DecodeError:
            yield number, None


def check_size(settings: WorkerSettings, num_lines: int, num_bytes: int) -> None:
    if num_lines > settings.max_lines:
        raise ApiError(400, f"A job may have at most {settings.max_lines} lines; this one has {num_lines}.",
                       code="too_many_lines", param="requests")
    if num_bytes > settings.max_bytes:
        raise ApiError(413, f"A job may have at most {settings.max_bytes} bytes of input.",
                       code="request_too_large")


def error_list(issues: list[ValidationIssue] | None) -> JobErrors | None:
    if not issues:
        return None
    return JobErrors(data=[JobErrorItem(code=i.code, message=i.message, line=i.line, param=i.param)
                           for i in issues])


def job_not_found(job_id: str, what: str = "job") -> ApiError:
    return ApiError(404, f"No {what} with id {job_id!r}.", code="not_found", param="id")


def owned_file_lines(service: JobService, file_id: str, owner: str) -> bytes:
    meta = service.files.get(file_id, owner)
    if meta is None:
        raise ApiError(404, f"No file with id {file_id!r}.", code="not_found", param="input_file_id")
    return service.files.read(file_id)


def result_progress(job: Job) -> float:
    return 1.0 if job.total == 0 else round(job.done / job.total, 4)
