"""Celery tasks: small, idempotent, taking ids. The ledger decides what is left to do, so a redelivered or
republished chunk only runs the lines that have no outcome yet.

The task functions are the entry points for tracing and metrics (one span per chunk / delivery).
"""

from __future__ import annotations

import asyncio
import logging
import os

import httpx

from workers import webhooks
from workers.app import app, settings
from workers.engine_http import Transient, client, line_error, run_line
from workers.jobs import JobService, expire, finalize
from workers.ledger import now
from workers.records import InputLine, Job
from workers.telemetry import record_line, record_webhook, tracer  # also instruments each worker child

logger = logging.getLogger("flowgate.workers")

# Test hook for the fault suite: running this custom_id kills the worker process, every time (a poison line
# that crashes its task, as a segfaulting tokenizer or an OOM kill would). Unset in production.
CRASH_ON = os.environ.get("FLOWGATE_TEST_CRASH_ON_CUSTOM_ID")
# `flowgate worker --engine local` sets it: lines run on an engine inside this (solo) worker process.
LOCAL = os.environ.get("FLOWGATE_WORKER_ENGINE") == "local"

_service: JobService | None = None
_local = None


def local_engine():
    global _local
    if _local is None:
        from engine.config import EngineConfig
        from workers.local_engine import LocalEngine

        _local = LocalEngine(EngineConfig.from_env())
    return _local


def service() -> JobService:
    global _service
    if _service is None:
        _service = JobService(settings)
    return _service


@app.task(bind=True, name="workers.tasks.run_chunk", max_retries=None)
def run_chunk(self, job_id: str, chunk_no: int) -> None:
    svc = service()
    job = svc.ledger.get(job_id)
    if job is None or job.terminal or job.status == "cancelling":
        return
    if now() >= job.expires_at:
        expire(svc, job)
        return
    svc.ledger.transition(job_id, "in_progress", allowed=("queued",))
    lines = svc.ledger.chunk_lines(job, chunk_no)
    done = svc.ledger.has_outcomes(job_id, [line.custom_id for line in lines])
    pending = [line for line, ok in zip(lines, done, strict=True) if not ok]
    crashes = svc.ledger.crash_counts(job_id, [line.custom_id for line in pending])
    poison = [line for line, n in zip(pending, crashes, strict=True) if n >= settings.max_line_crashes]
    if poison:
        svc.ledger.record(job_id, [line_error(
            line.custom_id, "line_crashed_worker",
            f"Running this line stopped its worker {settings.max_line_crashes} times; it was not retried again.",
        ) for line in poison])
    runnable = [line for line, n in zip(pending, crashes, strict=True) if n < settings.max_line_crashes]
    # After a crash, run one line at a time: only the line that crashes again is counted against it.
    if LOCAL:
        concurrency = 1 if any(crashes) else len(runnable)
        runnable = local_engine().order(job.endpoint, runnable)
    else:
        concurrency = 1 if any(crashes) else settings.line_concurrency
    num_transient = asyncio.run(_run_lines(svc, job, runnable, concurrency))
    if svc.ledger.remaining(job) == 0:
        finalize(svc, job_id)
    if num_transient:
        delay = min(30, 2 ** min(self.request.retries, 5))
        logger.warning("job %s chunk %d: %d lines could not run now; retrying in %d s",
                       job_id, chunk_no, num_transient, delay)
        raise self.retry(countdown=delay)


async def _run_lines(svc: JobService, job: Job, lines: list[InputLine], concurrency: int) -> int:
    gate = asyncio.Semaphore(concurrency)
    num_transient = 0

    async def one(http, line: InputLine) -> None:
        nonlocal num_transient
        async with gate:
            status = await asyncio.to_thread(svc.ledger.r.hget, f"{svc.settings.prefix}job:{job.id}", "status")
            if status != "in_progress":  # cancelled or expiring: the gateway closes the remaining lines
                return
            await asyncio.to_thread(svc.ledger.started_line, job.id, line.custom_id)
            if CRASH_ON is not None and line.custom_id == CRASH_ON:
                os._exit(70)
            # The line's call to the gateway is a child (the httpx instrumentation injects traceparent).
            with tracer().start_as_current_span("job.line", attributes={
                "flowgate.job.id": job.id, "flowgate.job.custom_id": line.custom_id,
            }) as span:
                try:
                    if LOCAL:
                        outcome = await local_engine().run_line(job.endpoint, line)
                    else:
                        outcome = await run_line(http, job.endpoint, line)
                except Transient:
                    span.set_attribute("error.type", "transient")  # no outcome: the line runs again later
                    await asyncio.to_thread(svc.ledger.returned_line, job.id, line.custom_id)
                    num_transient += 1
                    return
                except Exception as exc:  # a bug on our side ends this line, not the chunk
                    logger.exception("job %s line %r failed", job.id, line.custom_id)
                    outcome = line_error(line.custom_id, "internal_error",
                                         f"{type(exc).__name__} while running the line")
                if outcome.error is not None:
                    span.set_attribute("error.type", outcome.error.code)
            await asyncio.to_thread(svc.ledger.record, job.id, [outcome])
            record_line(outcome.ok)

    async with client(svc.settings) as http:
        await asyncio.gather(*(one(http, line) for line in lines))
    return num_transient


@app.task(name="workers.tasks.finalize")
def finalize_job(job_id: str) -> None:
    finalize(service(), job_id)


@app.task(name="workers.tasks.recover")
def recover() -> None:
    service().recover()


@app.task(bind=True, name="workers.tasks.deliver_webhook", max_retries=None)
def deliver_webhook(self, delivery_id: str) -> None:
    """One attempt; a non-2xx answer or a network error retries with backoff, a blocked URL never does."""
    r = service().ledger.r
    key = f"{settings.prefix}webhook:{delivery_id}"
    record = r.hgetall(key)
    if not record or record.get("state") != "pending":
        return
    attempts = r.hincrby(key, "attempts", 1)
    try:
        status = webhooks.send(settings, delivery_id, record["url"], record["payload"])
    except webhooks.BlockedDestination as exc:
        r.hset(key, mapping={"state": "blocked", "last_error": str(exc)})
        record_webhook(False)
        return
    except httpx.HTTPError as exc:
        status, error = None, type(exc).__name__
    else:
        error = f"HTTP {status}"
    if status is not None and 200 <= status < 300:
        r.hset(key, mapping={"state": "delivered", "delivered_at": str(now())})
        record_webhook(True)
        return
    r.hset(key, "last_error", error)
    record_webhook(False)
    if attempts >= settings.webhook_max_attempts:
        r.hset(key, "state", "failed")
        return
    raise self.retry(countdown=min(3600, 5 * 2 ** (attempts - 1)))
