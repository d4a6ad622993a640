"""`flowgate jobs submit|status|results|cancel` (a client of /v1/jobs) and `flowgate worker`."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

jobs_app = typer.Typer(help="Submit and follow bulk jobs on a running flowgate server.", no_args_is_help=True)
console = Console(stderr=True)
TERMINAL = ("completed", "failed", "cancelled", "expired")

Url = Annotated[str, typer.Option(envvar="FLOWGATE_URL", help="The server [FLOWGATE_URL]")]
Key = Annotated[str | None, typer.Option(envvar="FLOWGATE_API_KEY", help="API key [FLOWGATE_API_KEY]")]


def _client(url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=120)


def _check(response: httpx.Response) -> dict:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        console.print(f"[red]HTTP {response.status_code}:[/red] {message}")
        raise typer.Exit(1)
    return response.json()


def _read_requests(path: Path) -> list[dict]:
    """{custom_id, body} lines, or OpenAI batch input lines ({custom_id, method, url, body})."""
    requests = []
    for number, raw in enumerate(path.read_text().splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except json.JSONDecodeError as exc:
            console.print(f"[red]{path}:{number}: not JSON ({exc.msg})[/red]")
            raise typer.Exit(1) from None
        requests.append({"custom_id": item.get("custom_id"), "body": item.get("body")})
    return requests


def _write_results(http: httpx.Client, job_id: str, output: Path) -> None:
    response = http.get(f"/v1/jobs/{job_id}/results", params={"format": "jsonl"})
    if response.status_code >= 400:
        _check(response)
    output.write_bytes(response.content)
    console.print(f"results: {output}")


@jobs_app.command()
def submit(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="JSONL of requests")],
    wait: Annotated[bool, typer.Option("--wait", help="Follow the job and write its results")] = False,
    output: Annotated[Path | None, typer.Option(help="Where --wait writes results (FILE.results.jsonl)")] = None,
    endpoint: str = "/v1/chat/completions",
    idempotency_key: Annotated[str | None, typer.Option(help="Resubmitting with it returns the same job")] = None,
    url: Url = "http://127.0.0.1:8000",
    api_key: Key = None,
) -> None:
    """Submit FILE.jsonl as one job; prints the job id (and with --wait a progress bar, then the results)."""
    headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
    with _client(url, api_key) as http:
        job = _check(http.post("/v1/jobs", json={"requests": _read_requests(file), "endpoint": endpoint},
                               headers=headers))
        print(job["id"])
        if not wait:
            return
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:
            bar = progress.add_task(job["id"], total=job["counts"]["total"])
            while job["status"] not in TERMINAL:
                time.sleep(1)
                job = _check(http.get(f"/v1/jobs/{job['id']}"))
                counts = job["counts"]
                progress.update(bar, completed=counts["completed"] + counts["failed"],
                                description=f"{job['id']} {job['status']} ({counts['failed']} failed)")
        _write_results(http, job["id"], output or file.with_suffix(".results.jsonl"))
        if job["status"] != "completed":
            raise typer.Exit(2)


@jobs_app.command()
def status(job_id: str, url: Url = "http://127.0.0.1:8000", api_key: Key = None) -> None:
    """Print the job object."""
    with _client(url, api_key) as http:
        print(json.dumps(_check(http.get(f"/v1/jobs/{job_id}")), indent=2))


@jobs_app.command()
def results(job_id: str, output: Annotated[Path | None, typer.Option(help="File (default: stdout)")] = None,
            url: Url = "http://127.0.0.1:8000", api_key: Key = None) -> None:
    """The results so far, as JSONL."""
    with _client(url, api_key) as http:
        if output is None:
            response = http.get(f"/v1/jobs/{job_id}/results", params={"format": "jsonl"})
            if response.status_code >= 400:
                _check(response)
            sys.stdout.write(response.text)
        else:
            _write_results(http, job_id, output)


@jobs_app.command()
def cancel(job_id: str, url: Url = "http://127.0.0.1:8000", api_key: Key = None) -> None:
    """Cancel: pending lines end as errors, finished ones are kept."""
    with _client(url, api_key) as http:
        print(_check(http.post(f"/v1/jobs/{job_id}/cancel"))["status"])


def run_worker(concurrency: int, engine: str, loglevel: str, queues: str | None) -> None:
    """A Celery worker on FLOWGATE_REDIS_URL (the scale-out path: any number, any hosts)."""
    if engine == "local":
        os.environ["FLOWGATE_WORKER_ENGINE"] = "local"
    from workers.app import app, settings

    argv = ["worker", "-Q", queues or f"{settings.queue},{settings.webhook_queue}", "-l", loglevel,
            "--without-gossip", "--without-mingle"]
    # A local engine lives in the worker process, which must not fork after starting it: one solo worker.
    argv += ["-P", "solo"] if engine == "local" else ["-c", str(concurrency)]
    app.worker_main(argv)
