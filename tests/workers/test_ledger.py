"""The ledger and job service on the real (shared) Redis, every key under a per-test prefix."""

from __future__ import annotations

import dataclasses
import threading

import msgspec
import pytest

from workers.engine_http import line_error
from workers.jobs import JobConflict, JobService, QueueFull, finalize
from workers.records import InputLine, LineResponse, Outcome


def make_lines(n: int) -> list[InputLine]:
    return [InputLine(custom_id=f"l{i}", body={"model": "m", "messages": []}) for i in range(n)]


def ok(custom_id: str) -> Outcome:
    return Outcome(id="batch_req_x", custom_id=custom_id, error=None,
                   response=LineResponse(status_code=200, request_id="r", body={"ok": True}))


def submit(service: JobService, n: int = 3, owner: str = "key-a", **kw):
    return service.submit(owner=owner, face=kw.pop("face", "job"), endpoint="/v1/chat/completions",
                          lines=make_lines(n), window_s=kw.pop("window_s", 3600), window_label="1h", **kw)


def test_an_outcome_is_written_once_and_counts_follow(worker_settings):
    service = JobService(worker_settings)
    job = submit(service, 3)
    assert (job.status, job.total, job.num_chunks) == ("queued", 3, 2)
    assert service.ledger.record(job.id, [ok("l0")]) == 2
    assert service.ledger.record(job.id, [line_error("l0", "x", "late duplicate")]) == 2
    job = service.ledger.get(job.id)
    assert (job.completed, job.failed) == (1, 0)
    page, more = service.ledger.outcomes_page(job.id, after=None, limit=10)
    assert [o.ok for o in page] == [True] and not more
    service.ledger.record(job.id, [ok("l2")])
    assert [o.custom_id for o in service.ledger.outcomes_page(job.id, after="l0", limit=10)[0]] == ["l2"]
    assert service.ledger.outcomes_page(job.id, after="no-such-line", limit=10) == ([], False)  # not the top again


def test_concurrent_writers_of_the_same_lines_count_each_line_once(worker_settings):
    service = JobService(worker_settings)
    job = submit(service, 20)

    def write(kind: str) -> None:
        for i in range(20):
            outcome = ok(f"l{i}") if kind == "ok" else line_error(f"l{i}", "e", "m")
            service.ledger.record(job.id, [outcome])

    threads = [threading.Thread(target=write, args=(kind,)) for kind in ("ok", "err", "ok", "err")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    job = service.ledger.get(job.id)
    assert job.completed + job.failed == 20
    assert len(list(service.ledger.all_outcomes(job.id))) == 20
    assert service.ledger.r.get(f"{worker_settings.prefix}queued:key-a") == "0"


def test_jobs_belong_to_their_owner_and_list_newest_first(worker_settings):
    service = JobService(worker_settings)
    ids = [submit(service, 1).id for _ in range(3)]
    assert service.get(ids[0], "key-b") is None
    assert service.cancel(ids[0], "key-b") is None
    page, more = service.list("key-a", face="job", after=None, limit=2)
    assert [j.id for j in page] == ids[::-1][:2] and more
    page, more = service.list("key-a", face="job", after=page[-1].id, limit=2)
    assert [j.id for j in page] == [ids[0]] and not more
    assert service.list("key-b", face="job", after=None, limit=10) == ([], False)


def test_idempotency_key_and_queued_lines_cap(worker_settings):
    service = JobService(dataclasses.replace(worker_settings, max_queued_lines_per_key=5))
    first = submit(service, 3, idempotency_key="k", digest="d1")
    assert submit(service, 3, idempotency_key="k", digest="d1").id == first.id
    with pytest.raises(JobConflict):
        submit(service, 3, idempotency_key="k", digest="d2")
    with pytest.raises(QueueFull):
        submit(service, 3)
    submit(service, 3, owner="key-b")  # the cap is per key
    service.ledger.record(first.id, [ok("l0"), ok("l1")])
    assert submit(service, 2).total == 2


def test_expired_and_cancelled_jobs_close_every_pending_line(worker_settings):
    service = JobService(worker_settings)
    job = submit(service, 3, window_s=0)
    service.ledger.record(job.id, [ok("l1")])
    job = service.get(job.id, "key-a")
    assert (job.status, job.completed, job.failed) == ("expired", 1, 2)
    codes = {o.custom_id: o.error.code for o in service.ledger.all_outcomes(job.id) if o.error}
    assert codes == {"l0": "batch_expired", "l2": "batch_expired"}
    job = submit(service, 4)
    job = service.cancel(job.id, "key-a")
    assert (job.status, job.failed) == ("cancelled", 4) and job.cancelled_at is not None
    assert service.ledger.r.get(f"{worker_settings.prefix}queued:key-a") == "0"
    assert service.ledger.active_ids() == []


def test_batch_finalize_writes_output_and_error_files_once(worker_settings):
    service = JobService(worker_settings)
    job = submit(service, 2, face="batch")
    service.ledger.record(job.id, [ok("l0"), line_error("l1", "invalid_request", "bad")])
    finalize(service, job.id)
    finalize(service, job.id)  # idempotent
    job = service.ledger.get(job.id)
    assert job.status == "completed" and job.completed_at is not None
    out = [msgspec.json.decode(x) for x in service.files.read(job.output_file_id).splitlines()]
    err = [msgspec.json.decode(x) for x in service.files.read(job.error_file_id).splitlines()]
    assert [o["custom_id"] for o in out] == ["l0"] and [e["custom_id"] for e in err] == ["l1"]
    assert service.files.get(job.output_file_id, "key-a").purpose == "batch_output"
    assert service.files.get(job.output_file_id, "key-b") is None


def test_file_ids_never_escape_the_files_directory(worker_settings):
    service = JobService(worker_settings)
    for bad in ("../etc/passwd", "file-../../x", "file-a/b"):
        with pytest.raises(FileNotFoundError):
            service.files.path(bad)
