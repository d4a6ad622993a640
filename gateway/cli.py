"""The `flowgate` command."""

from __future__ import annotations

from typing import Annotated

import typer

from engine.cli import bench_app, models_app, quantize_app
from gateway.jobs_cli import jobs_app
from gateway.keys_cli import keys_app

app = typer.Typer(help="flowgate: an OpenAI-compatible LLM inference service.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(quantize_app, name="quantize")
app.add_typer(keys_app, name="keys")
app.add_typer(jobs_app, name="jobs")


@bench_app.command("gateway")
def bench_gateway(
    model: str = "smollm2-135m",
    requests: int = 40,
    max_tokens: int = 1,
    json: Annotated[bool, typer.Option("--json")] = False,
    tracing: Annotated[bool, typer.Option(help="Also time a server with tracing on (100%, OTLP/HTTP)")] = False,
) -> None:
    """Latency HTTP adds over calling the AsyncEngine directly (and tracing over that, with --tracing)."""
    from gateway.bench import run

    run(model=model, num_requests=requests, max_tokens=max_tokens, as_json=json, tracing=tracing)


@bench_app.command("tiers")
def bench_tiers(
    model: str = "smollm2-135m",
    paid_requests: Annotated[int, typer.Option(help="Paid requests idle, and again under the flood")] = 40,
    flood_s: Annotated[float, typer.Option(help="Length of the free flood")] = 20.0,
    free_keys: Annotated[int, typer.Option(help="Free keys sharing the flood (the first sends 2x)")] = 4,
    overload: Annotated[float, typer.Option(help="Free arrivals as a multiple of the free tier's capacity")] = 4.0,
    free_inflight: Annotated[int, typer.Option(help="FLOWGATE_ADMIT_FREE_INFLIGHT for the server")] = 8,
    free_queue: Annotated[int, typer.Option(help="FLOWGATE_ADMIT_FREE_QUEUE for the server")] = 32,
    free_max_tokens: int = 32,
    interruptible_steps: Annotated[bool, typer.Option(
        help="Engine steps give way mid-step to a request that outranks them (off: the figure without)")] = True,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Paid TTFT idle vs under a free flood (>= 4x capacity), free refusals, per-key fair share."""
    from gateway.bench_tiers import run

    run(model, paid_requests, flood_s, free_keys, overload, free_inflight, free_queue, free_max_tokens,
        interruptible_steps, json)


@bench_app.command("tools")
def bench_tools(
    model: str = "smollm2-135m",
    url: Annotated[str | None, typer.Option(help="A running server instead of starting one")] = None,
    limit: Annotated[int | None, typer.Option(help="Only N cases, spread over the categories")] = None,
    max_tokens: int = 128,
    temperature: Annotated[float | None, typer.Option(help="Sent only when given, as agent clients do")] = None,
    concurrency: int = 4,
    category: Annotated[list[str] | None, typer.Option(help="Only these categories (repeatable)")] = None,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Tool-calling accuracy on our eval set: valid and exact calls per category, for auto and required."""
    from gateway.toolbench.run import run

    run(model=model, url=url, limit=limit, max_tokens=max_tokens, temperature=temperature,
        concurrency=concurrency, categories=category, as_json=json)


@bench_app.command("serve")
def bench_serve(
    model: str = "smollm2-135m",
    configs: Annotated[str, typer.Option(help="Comma-separated: fp32,bf16,int8,int4")] = "fp32,bf16,int8,int4",
    concurrency: Annotated[str, typer.Option(help="Comma-separated client counts")] = "1,8,32",
    max_tokens: Annotated[int, typer.Option(help="Output tokens per request (ignore_eos)")] = 128,
    rounds: Annotated[int, typer.Option(help="Requests each client sends in turn")] = 2,
    baseline_url: Annotated[str | None, typer.Option(help="Another OpenAI-compatible server to compare")] = None,
    baseline_model: Annotated[str | None, typer.Option(help="Model name at the baseline (default: its first)")] = None,
    noisy: Annotated[bool, typer.Option("--noisy", help="Also measure beside a CPU-burning neighbour")] = False,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Streaming serving speed over HTTP per weight format: tok/s, TTFT and TPOT at each concurrency."""
    from gateway.bench_serve import run

    run(
        model=model,
        configs=[c.strip() for c in configs.split(",") if c.strip()],
        concurrency=[int(c) for c in concurrency.split(",")],
        max_tokens=max_tokens,
        rounds=rounds,
        baseline_url=baseline_url,
        baseline_model=baseline_model,
        noisy=noisy,
        as_json=json,
    )


@app.command()
def serve(
    model: Annotated[str | None, typer.Option(help="Model alias or local Hugging Face directory")] = None,
    host: Annotated[str | None, typer.Option(help="Bind address [FLOWGATE_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="Port [FLOWGATE_PORT]")] = None,
    speculative: Annotated[
        str | None, typer.Option(help="Speculative decoding: ngram | draft | off [FLOWGATE_SPECULATIVE]")
    ] = None,
    num_speculative_tokens: Annotated[
        int | None, typer.Option(help="Most draft tokens per step [FLOWGATE_NUM_SPECULATIVE_TOKENS]")
    ] = None,
    speculative_model: Annotated[
        str | None, typer.Option(help="Draft model dir for --speculative draft [FLOWGATE_SPECULATIVE_MODEL]")
    ] = None,
    quantization: Annotated[
        str | None, typer.Option(help="auto | none | int8 | int4 | awq: CPU weight format [FLOWGATE_QUANTIZATION]")
    ] = None,
) -> None:
    """Start the gateway and the engine (the bundled model on 127.0.0.1:8000 by default)."""
    from gateway.server import serve as run_server

    run_server(model=model, host=host, port=port, speculative=speculative,
               num_speculative_tokens=num_speculative_tokens, speculative_model=speculative_model,
               quantization=quantization)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option(help="Chunks run at once (prefork processes)")] = 2,
    engine: Annotated[str, typer.Option(help="'gateway': lines go to the live engine through "
                                             "FLOWGATE_GATEWAY_URL at batch priority; 'local': an engine of its own")]
    = "gateway",
    loglevel: str = "info",
    queues: Annotated[str | None, typer.Option(help="Comma-separated queues (default: bulk and webhooks)")] = None,
) -> None:
    """Run a bulk worker against FLOWGATE_REDIS_URL (`flowgate serve` runs one itself when that is unset)."""
    from gateway.jobs_cli import run_worker

    if engine not in ("gateway", "local"):
        raise typer.BadParameter("--engine is 'gateway' or 'local'")
    run_worker(concurrency, engine, loglevel, queues)


@bench_app.command("bulk")
def bench_bulk(
    model: str = "smollm2-135m",
    lines: int = 512,
    max_tokens: int = 16,
    concurrency: Annotated[int, typer.Option(help="Concurrent online requests in the online phase")] = 64,
    paid: Annotated[int, typer.Option(help="Paid requests timed alone")] = 20,
    bulk_in_flight: Annotated[int, typer.Option(help="Bulk lines the worker keeps in flight")] = 8,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Bulk via the live engine (with a paid trickle), via a local-engine worker, and as online requests."""
    from gateway.bench_bulk import run

    run(model=model, num_lines=lines, max_tokens=max_tokens, concurrency=concurrency, num_paid=paid, as_json=json,
        bulk_in_flight=bulk_in_flight)
