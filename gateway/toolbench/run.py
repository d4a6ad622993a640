"""Run the eval set against a live server and print the table (and, with --json, one JSON object last).

Each case is asked with tool_choice "auto" and, unless it wants no call, "required", through the openai SDK
against a `flowgate serve` subprocess started here (or --url). The request is what an agent client sends:
the case's tools, max_tokens, and no temperature unless --temperature is given.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gateway.bench_support import free_port, wait_ready
from gateway.toolbench.cases import load
from gateway.toolbench.score import is_exact, is_valid, parse_calls

MODES = ("auto", "required")
READY_TIMEOUT_S = 300.0


@dataclass(slots=True)
class Result:
    category: str
    mode: str
    wants_call: bool
    valid: bool
    exact: bool
    num_calls: int
    completion_tokens: int
    latency_s: float
    duplicate: bool  # two identical calls in one answer
    empty: bool  # no content and no call


def run(*, model: str = "smollm2-135m", url: str | None = None, limit: int | None = None, max_tokens: int = 128,
        temperature: float | None = None, concurrency: int = 4, categories: list[str] | None = None,
        as_json: bool = False) -> dict:
    cases, functions = load()
    if categories:
        cases = [case for case in cases if case["category"] in categories]
    if limit:
        cases = cases[:: max(1, math.ceil(len(cases) / limit))][:limit]
    results = asyncio.run(_run_all(cases, functions, model, url, max_tokens, temperature, concurrency))
    summary = summarize(results)
    summary.update(model=model, cases=len(cases), max_tokens=max_tokens, temperature=temperature,
                   concurrency=concurrency, categories=categories)
    _print_table(summary)
    if as_json:
        print(json.dumps(summary))
    return summary


async def _run_all(cases, functions, model, url, max_tokens, temperature, concurrency) -> list[Result]:
    from openai import AsyncOpenAI

    server = None
    if url is None:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(
            [sys.executable, "-c", "from gateway.cli import app; app()", "serve", "--model", model, "--port", str(port)],
            env={**os.environ, "FLOWGATE_LOG_LEVEL": "warning"},
        )
    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            await wait_ready(http, server, READY_TIMEOUT_S)
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key=os.environ.get("OPENAI_API_KEY", "unused"),
                             max_retries=0, timeout=600)
        served = (await client.models.list()).data[0].id
        gate = asyncio.Semaphore(concurrency)
        jobs = [(case, mode) for case in cases for mode in MODES if mode == "auto" or case["expected"]]

        with Progress(TextColumn("tool calls"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=Console(stderr=True), transient=True) as progress:
            task = progress.add_task("", total=len(jobs))

            async def one(case, mode):
                async with gate:
                    result = await _ask(client, served, case, mode, functions, max_tokens, temperature)
                progress.advance(task)
                return result

            return list(await asyncio.gather(*(one(c, m) for c, m in jobs)))
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)


async def _ask(client, model, case, mode, functions, max_tokens, temperature) -> Result:
    extra = {} if temperature is None else {"temperature": temperature}
    tools = [{"type": "function", "function": {"name": n, **functions[n]}} for n in case["tools"]]
    start = time.perf_counter()
    response = await client.chat.completions.create(
        model=model, messages=case["messages"], tools=tools, tool_choice=mode, max_tokens=max_tokens, **extra)
    latency = time.perf_counter() - start
    message = response.choices[0].message
    calls = parse_calls(message.tool_calls)
    keys = [json.dumps([n, a], sort_keys=True) for n, a in calls]
    return Result(
        category=case["category"], mode=mode, wants_call=bool(case["expected"]),
        valid=is_valid(calls, {n: functions[n] for n in case["tools"]}),
        exact=is_exact(calls, case["expected"]), num_calls=len(calls),
        completion_tokens=response.usage.completion_tokens, latency_s=latency,
        duplicate=len(set(keys)) < len(keys), empty=not calls and not message.content,
    )


def summarize(results: list[Result]) -> dict:
    rows = {}
    for category in dict.fromkeys(r.category for r in results):
        for mode in MODES:
            group = [r for r in results if r.category == category and r.mode == mode]
            if group:
                rows.setdefault(category, {})[mode] = _stats(group)
    forced = [r for r in results if r.mode == "required"]
    auto = [r for r in results if r.mode == "auto"]
    return {
        "forced_valid_rate": _rate(r.valid for r in forced),
        "forced_accuracy": _rate(r.exact for r in forced),
        "auto_accuracy": _rate(r.exact for r in auto),
        "auto_valid_rate": _rate(r.valid for r in auto if r.wants_call),
        "duplicate_rate": _rate(r.duplicate for r in results),
        "empty_rate": _rate(r.empty for r in results),
        "per_category": rows,
    }


def _stats(group: list[Result]) -> dict:
    with_calls = [r for r in group if r.num_calls]
    wants = [r for r in group if r.wants_call]
    return {
        "n": len(group),
        "valid_rate": _rate(r.valid for r in wants) if wants else None,
        "accuracy": _rate(r.exact for r in group),
        "tokens_per_call": round(sum(r.completion_tokens for r in with_calls)
                                 / max(1, sum(r.num_calls for r in with_calls)), 1) if with_calls else None,
        "p50_latency_s": round(statistics.median(r.latency_s for r in group), 3),
        "duplicate_rate": _rate(r.duplicate for r in group),
        "empty_rate": _rate(r.empty for r in group),
    }


def _rate(flags) -> float | None:
    flags = list(flags)
    return round(sum(flags) / len(flags), 3) if flags else None


def _print_table(summary: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    temperature = "unset" if summary["temperature"] is None else summary["temperature"]
    table = Table(title=f"tool calls: {summary['cases']} cases, max_tokens={summary['max_tokens']}, "
                        f"temperature {temperature}, {summary['concurrency']} concurrent, {summary['model']}")
    for column in ("category", "tool_choice", "n", "valid", "exact", "tokens/call", "p50 s", "dup", "empty"):
        table.add_column(column)
    fmt = lambda v: "-" if v is None else f"{v:.1%}" if isinstance(v, float) and v <= 1 else str(v)  # noqa: E731
    for category, modes in summary["per_category"].items():
        for mode, s in modes.items():
            table.add_row(category, mode, str(s["n"]), fmt(s["valid_rate"]), fmt(s["accuracy"]),
                          str(s["tokens_per_call"] or "-"), str(s["p50_latency_s"]), fmt(s["duplicate_rate"]),
                          fmt(s["empty_rate"]))
    Console().print(table)
    print(f"forced: valid {fmt(summary['forced_valid_rate'])}, exact {fmt(summary['forced_accuracy'])}; "
          f"auto: exact {fmt(summary['auto_accuracy'])}; duplicates {fmt(summary['duplicate_rate'])}, "
          f"empty answers {fmt(summary['empty_rate'])}")
