"""The job API the gateway uses (submit, read, cancel, list) and the lifecycle steps tasks share.

Status flow (the Batch API shows `queued` as `validating`; REST jobs show `finalizing` as `in_progress`):

    queued -> in_progress -> finalizing -> completed | failed | expired
        \\__________\\-> cancelling -> (finalizing) -> cancelled

A job ends only when every accepted line has its one outcome: cancel and expiry write an error outcome for each
line still without one, so "every line ends exactly once, in results or in errors" holds for every end.
"""

from __future__ import annotations

import secrets

import msgspec

from workers.app import create_app
from workers.config import WorkerSettings
from workers.engine_http import line_error
from workers.files import FileStore
from workers.ledger import Ledger, now
from workers.records import Face, InputLine, Job, ValidationIssue
from workers.telemetry import current_traceparent, job_trace, record_job_state, tracer
from workers.tracing import instrument_celery
from workers.webhooks import schedule_delivery


class JobConflict(Exception):
    """The Idempotency-Key was used before with a different request."""


class QueueFull(Exception):
    """The owner has too many lines waiting already."""


def new_job_id(face: Face) -> str:
    return ("batch_" if face == "batch" else "job_") + secrets.token_hex(12)


class JobService:
    def __init__(self, settings: WorkerSettings, *, patient: bool = True):
        """`patient`: ride out a Redis restart (workers); the gateway answers 503 instead."""
        self.settings = settings
        self.ledger = Ledger(settings, patient=patient)
        self.files = FileStore(settings, patient=patient)
        self.celery = create_app(settings)  # a publisher bound to these settings' Redis, prefix and queues
        instrument_celery()  # published tasks carry the submitting request's trace context

    def publish_chunks(self, job_id: str, chunk_nos) -> None:
        for chunk_no in chunk_nos:
            # Tasks take ids; the stable task id names the chunk in `celery inspect` and in traces.
            self.celery.send_task("workers.tasks.run_chunk", args=[job_id, chunk_no],
                                  task_id=f"{job_id}.{chunk_no}")

    def submit(self, *, owner: str, face: Face, endpoint: str, lines: list[InputLine], window_s: int,
               window_label: str, metadata: dict | None = None, callback_url: str | None = None,
               input_file_id: str | None = None, idempotency_key: str | None = None, digest: str = "",
               errors: list[ValidationIssue] | None = None) -> Job:
        """Accept a job (all its lines in Redis before this returns) and queue its chunks.

        With `errors` the job is recorded as failed validation and nothing runs (the Batch API's way)."""
        job_id = new_job_id(face)
        if idempotency_key is not None:
            earlier = self.ledger.claim_idempotency_key(owner, idempotency_key, job_id, digest)
            if earlier is not None:
                if earlier[1] != digest:
                    raise JobConflict("This Idempotency-Key was already used with a different request.")
                job = self.ledger.get(earlier[0])
                if job is not None:
                    return job
                raise JobConflict("A request with this Idempotency-Key is still being accepted; retry shortly.")
        accepted = not errors
        if accepted and not self.ledger.reserve_lines(owner, len(lines)):
            if idempotency_key is not None:
                self.ledger.r.delete(f"{self.settings.prefix}idem:{owner}:{idempotency_key}")
            raise QueueFull(f"Too many queued lines for this key (limit {self.settings.max_queued_lines_per_key});"
                            " wait for running jobs to finish.")
        size = self.settings.chunk_size
        created = now()
        # The job keeps this span's context: every task of the job is published in its trace.
        with tracer().start_as_current_span("job.submit", attributes={
            "flowgate.job.id": job_id, "flowgate.key_id": owner, "flowgate.job.endpoint": endpoint,
            "flowgate.job.num_lines": len(lines),
        }):
            job = Job(
                id=job_id, face=face, owner=owner, status="queued" if accepted else "failed", endpoint=endpoint,
                total=len(lines) if accepted else 0, chunk_size=size,
                num_chunks=-(-len(lines) // size) if accepted else 0, created_at=created,
                expires_at=created + window_s, completion_window=window_label, metadata=metadata or None,
                callback_url=callback_url, input_file_id=input_file_id, errors=errors or None,
                failed_at=None if accepted else created, traceparent=current_traceparent(),
            )
            try:
                self.ledger.create(job, lines if accepted else [])
            except Exception:  # nothing was accepted: free the key and the quota for the client's retry
                if idempotency_key is not None:
                    self.ledger.r.delete(f"{self.settings.prefix}idem:{owner}:{idempotency_key}")
                if accepted:
                    self.ledger.release_lines(owner, len(lines))
                raise
            record_job_state("submitted" if accepted else "failed")
            if accepted:
                self.publish_chunks(job.id, range(job.num_chunks))
                if not lines:
                    finalize(self, job.id)
        return self.ledger.get(job.id) or job

    def get(self, job_id: str, owner: str) -> Job | None:
        """Someone else's job does not exist. A job past its deadline expires on read (no scheduler needed)."""
        job = self.ledger.get(job_id)
        if job is None or job.owner != owner:
            return None
        if not job.terminal and now() >= job.expires_at:
            expire(self, job)
            job = self.ledger.get(job_id)
        return job

    def list(self, owner: str, *, face: Face, after: str | None, limit: int) -> tuple[list[Job], bool]:
        return self.ledger.list_jobs(owner, face, after=after, limit=limit)

    def cancel(self, job_id: str, owner: str) -> Job | None:
        job = self.get(job_id, owner)
        if job is None or job.terminal:
            return job
        if self.ledger.transition(job.id, "cancelling", allowed=("queued", "in_progress")):
            close_pending(self, job, "batch_cancelled", "The job was cancelled before this line ran.")
            finalize(self, job.id)
        return self.ledger.get(job.id)

    def recover(self, *, republish_all: bool = False) -> None:
        """Sweep unfinished jobs: expire the overdue, finish the complete, republish the stalled.

        Covers what Celery alone cannot: a chunk whose task failed or whose message was lost (a Redis restart
        between an append and its fsync), or a finalize that died halfway. Chunks are idempotent, so a
        republished chunk that was merely slow costs engine time, never a duplicate line. `republish_all`:
        no worker from before can still be running (an embedded worker started with this gateway)."""
        for job_id in self.ledger.active_ids():
            job = self.ledger.get(job_id)
            if job is None or job.terminal:
                continue
            if now() >= job.expires_at:
                expire(self, job)
            elif self.ledger.remaining(job) == 0:
                finalize(self, job.id)
            elif republish_all or now() - (job.updated_at or job.created_at) >= self.settings.stall_s:
                self.ledger.update(job.id, updated_at=str(now()))
                with job_trace(job.traceparent):
                    self.publish_chunks(job.id, pending_chunks(self, job))


def pending_chunks(service: JobService, job: Job) -> list[int]:
    pending = []
    for chunk_no in range(job.num_chunks):
        ids = [line.custom_id for line in service.ledger.chunk_lines(job, chunk_no)]
        if not all(service.ledger.has_outcomes(job.id, ids)):
            pending.append(chunk_no)
    return pending


def close_pending(service: JobService, job: Job, code: str, message: str) -> None:
    """Give every line still without an outcome an error outcome (cancel, expiry)."""
    for chunk_no in range(job.num_chunks):
        lines = service.ledger.chunk_lines(job, chunk_no)
        done = service.ledger.has_outcomes(job.id, [line.custom_id for line in lines])
        missing = [line_error(line.custom_id, code, message) for line, ok in zip(lines, done, strict=True) if not ok]
        if missing:
            service.ledger.record(job.id, missing)


def expire(service: JobService, job: Job) -> None:
    service.ledger.update(job.id, expiring="1")
    close_pending(service, job, "batch_expired", "The job's completion window ended before this line ran.")
    finalize(service, job.id)


def finalize(service: JobService, job_id: str) -> None:
    """Once every line has its outcome: write the Batch API's output files, settle the status, notify.

    Safe to run any number of times, concurrently too: files are rewritten identically and only the caller
    whose transition succeeds sends the webhook."""
    ledger = service.ledger
    job = ledger.get(job_id)
    if job is None or job.terminal or ledger.remaining(job) > 0:
        return
    ledger.transition(job_id, "finalizing", allowed=("queued", "in_progress", "cancelling"))
    job = ledger.get(job_id)
    if job is None or job.status != "finalizing":
        return
    if job.face == "batch":
        write_result_files(service, job)
    if job.cancelling_at is not None:
        final = "cancelled"
    elif job.expiring:
        final = "expired"
    elif job.face == "job" and job.total > 0 and job.completed == 0:
        final = "failed"  # nothing succeeded: tell the n8n flow plainly
    else:
        final = "completed"
    if not ledger.transition(job_id, final, allowed=("finalizing", "cancelling")):
        return
    record_job_state(final)
    if job.callback_url:
        schedule_delivery(service, job_id, final)


def write_result_files(service: JobService, job: Job) -> None:
    out, err = bytearray(), bytearray()
    for outcome in service.ledger.all_outcomes(job.id):
        (out if outcome.ok else err).extend(msgspec.json.encode(outcome) + b"\n")
    fields = {}
    if out:
        fields["output_file_id"] = service.files.put(
            owner=job.owner, filename=f"{job.id}_output.jsonl", purpose="batch_output", content=bytes(out),
            file_id=f"file-{job.id[6:]}-out").id
    if err:
        fields["error_file_id"] = service.files.put(
            owner=job.owner, filename=f"{job.id}_error.jsonl", purpose="batch_output", content=bytes(err),
            file_id=f"file-{job.id[6:]}-err").id
    if fields:
        service.ledger.update(job.id, **fields)
