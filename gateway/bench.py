"""`flowgate bench gateway`: the latency HTTP adds on top of the engine.

The same short greedy chat request is timed two ways, alternating so that machine noise hits both alike:
through a `flowgate serve` process (openai-style JSON over HTTP: parsing, validation, prompt rendering,
the engine round trip, response encoding) and straight through an AsyncEngine in this process (the prompt
rendered once up front). Both engines load the same model with the same settings and produce the same
tokens; the added latency is the difference of the medians (and the median of the paired differences).
One output token by default: non-streaming HTTP adds nothing per token, and on a shared CPU the noise of
longer generations swamps a few milliseconds.

`--tracing` adds a third path, a second `flowgate serve` with tracing on (sampling 100%, the OTLP/HTTP
exporter sending to a sink in this process, which counts what arrives), timed in the same rotation: the
cost of tracing is the traced server's latency minus the untraced one's.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time

import httpx

from engine.client import AsyncEngine
from engine.protocol import GenerateRequest, SamplingParams
from gateway.bench_support import free_port, wait_ready
from gateway.chat_core import plan_chat
from gateway.schemas.chat import ChatMessage
from gateway.settings import Settings

PROMPT = "Write one short sentence about the sea."
WARMUP_ROUNDS = 2
READY_TIMEOUT_S = 300.0


def run(model: str = "smollm2-135m", num_requests: int = 40, max_tokens: int = 1, as_json: bool = False,
        tracing: bool = False) -> dict:
    result = asyncio.run(_measure(model, num_requests, max_tokens, tracing))
    if as_json:
        print(json.dumps(result))
    else:
        _print_table(result)
    return result


async def _measure(model: str, num_requests: int, max_tokens: int, tracing: bool) -> dict:
    untraced_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    servers = [_serve(model, untraced_env)]
    sink = None
    if tracing:
        from gateway.telemetry.otlp_sink import OTLPSink

        sink = OTLPSink()
        servers.append(_serve(model, {**untraced_env, "OTEL_EXPORTER_OTLP_ENDPOINT": sink.url,
                                      "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                                      "OTEL_TRACES_SAMPLER": "always_on"}))
    engine = await AsyncEngine.start(Settings.from_env(model=model).engine)
    try:
        clients = [httpx.AsyncClient(base_url=url, timeout=READY_TIMEOUT_S) for _, url in servers]
        for (process, _), http in zip(servers, clients, strict=True):
            await wait_ready(http, process, READY_TIMEOUT_S)
        direct = _direct_call(engine, max_tokens)
        paths = [direct] + [_http_call(http, engine.model_info.name, max_tokens) for http in clients]
        for _ in range(WARMUP_ROUNDS):
            tokens = [await call() for call in paths]
            assert len(set(tokens)) == 1, "every path must generate the same tokens"
        times: list[list[float]] = [[] for _ in paths]
        cpu_before = [_cpu_ns(process.pid) for process, _ in servers]
        for _ in range(num_requests):
            for call, samples in zip(paths, times, strict=True):
                samples.append(await _timed(call))
        cpu_after = [_cpu_ns(process.pid) for process, _ in servers]
        cpu_ms = [(after - before) / 1e6 / num_requests for after, before in zip(cpu_after, cpu_before, strict=True)]
        for http in clients:
            await http.aclose()
    finally:
        for process, _ in servers:
            process.send_signal(signal.SIGINT)  # a graceful stop flushes the traced server's spans
            process.wait(timeout=30)
        await engine.shutdown()
    direct_s, http_s = times[0], times[1]
    result = {
        "model": model,
        "requests": num_requests,
        "max_tokens": max_tokens,
        "direct_p50_ms": _ms(statistics.median(direct_s)),
        "http_p50_ms": _ms(statistics.median(http_s)),
        "added_p50_ms": _ms(statistics.median(http_s) - statistics.median(direct_s)),
        "added_p50_of_pairs_ms": _ms(statistics.median(h - d for h, d in zip(http_s, direct_s, strict=True))),
        "direct_p90_ms": _ms(_p90(direct_s)),
        "http_p90_ms": _ms(_p90(http_s)),
        "gateway_cpu_ms_per_request": round(cpu_ms[0], 3),
    }
    if tracing:
        traced_s = times[2]
        result |= {
            "traced_p50_ms": _ms(statistics.median(traced_s)),
            "traced_p90_ms": _ms(_p90(traced_s)),
            "tracing_added_p50_ms": _ms(statistics.median(traced_s) - statistics.median(http_s)),
            "tracing_added_p50_of_pairs_ms": _ms(statistics.median(t - h for t, h in zip(traced_s, http_s,
                                                                                           strict=True))),
            "traced_gateway_cpu_ms_per_request": round(cpu_ms[1], 3),
            # Span export included (the SDK's background thread): an upper bound on the latency tracing adds.
            "tracing_added_cpu_ms_per_request": round(cpu_ms[1] - cpu_ms[0], 3),
            "spans_exported": sink.num_spans,
        }
        sink.close()
    return result


def _serve(model: str, env: dict) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-c", "from gateway.cli import app; app()", "serve", "--model", model, "--port", str(port)],
        env={**env, "FLOWGATE_LOG_LEVEL": "warning"},
    )
    return process, f"http://127.0.0.1:{port}"


def _direct_call(engine: AsyncEngine, max_tokens: int):
    prompt = plan_chat(engine.tokenizer, [ChatMessage(role="user", content=PROMPT)]).prompt
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    counter = iter(range(1 << 62))

    async def call() -> int:
        num_tokens = 0
        request = GenerateRequest(request_id=f"bench-{next(counter)}", prompt=prompt, params=params)
        async for out in engine.generate(request):
            num_tokens += sum(len(c.token_ids) for c in out.outputs)
        return num_tokens

    return call


def _http_call(http: httpx.AsyncClient, model: str, max_tokens: int):
    body = {"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens,
            "temperature": 0}

    async def call() -> int:
        response = await http.post("/v1/chat/completions", json=body)
        response.raise_for_status()
        return response.json()["usage"]["completion_tokens"]

    return call


async def _timed(call) -> float:
    start = time.perf_counter()
    await call()
    return time.perf_counter() - start


def _cpu_ns(pid: int) -> int:
    """CPU time (ns) the gateway process has used, all its threads (not the engine process it spawned).

    On a shared machine latency differences of a millisecond drown in scheduling noise; the CPU a request
    costs the gateway does not, and it bounds what tracing can add to an unloaded request's latency."""
    total = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                total += int(f.read().split()[0])
        except FileNotFoundError:  # a thread that just ended
            continue
    return total


def _p90(values: list[float]) -> float:
    return statistics.quantiles(values, n=10)[-1] if len(values) > 1 else values[0]


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def _print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gateway overhead: {result['requests']} greedy chat requests, "
                        f"max_tokens={result['max_tokens']}, {result['model']}")
    for column in ("path", "p50 ms", "p90 ms"):
        table.add_column(column)
    table.add_row("AsyncEngine directly", str(result["direct_p50_ms"]), str(result["direct_p90_ms"]))
    table.add_row("HTTP /v1/chat/completions", str(result["http_p50_ms"]), str(result["http_p90_ms"]))
    table.add_row("added by HTTP (p50)", str(result["added_p50_ms"]), "")
    table.add_row("added, median of pairs", str(result["added_p50_of_pairs_ms"]), "")
    if "traced_p50_ms" in result:
        table.add_row("HTTP, tracing on (100%, OTLP/HTTP)", str(result["traced_p50_ms"]), str(result["traced_p90_ms"]))
        table.add_row("added by tracing (p50)", str(result["tracing_added_p50_ms"]), "")
        table.add_row("added by tracing, median of pairs", str(result["tracing_added_p50_of_pairs_ms"]), "")
        table.add_row("spans exported", str(result["spans_exported"]), "")
        table.add_row("gateway CPU per request, off / on (ms)",
                      f"{result['gateway_cpu_ms_per_request']} / {result['traced_gateway_cpu_ms_per_request']}", "")
        table.add_row("added by tracing, gateway CPU per request (ms)",
                      str(result["tracing_added_cpu_ms_per_request"]), "")
    Console().print(table)
