"""The `flowgate` command."""

from __future__ import annotations

from typing import Annotated

import typer

from engine.cli import bench_app, models_app, quantize_app

app = typer.Typer(help="flowgate: an OpenAI-compatible LLM inference service.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(bench_app, name="bench")
app.add_typer(quantize_app, name="quantize")


@bench_app.command("gateway")
def bench_gateway(
    model: str = "smollm2-135m",
    requests: int = 40,
    max_tokens: int = 1,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Latency HTTP adds over calling the AsyncEngine directly."""
    from gateway.bench import run

    run(model=model, num_requests=requests, max_tokens=max_tokens, as_json=json)


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
    quantization: Annotated[
        str | None, typer.Option(help="auto | none | int8 | int4 | awq: CPU weight format [FLOWGATE_QUANTIZATION]")
    ] = None,
) -> None:
    """Start the gateway and the engine (the bundled model on 127.0.0.1:8000 by default)."""
    from gateway.server import serve as run_server

    run_server(model=model, host=host, port=port, quantization=quantization)
