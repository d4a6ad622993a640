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
) -> None:
    """Start the gateway and the engine (the bundled model on 127.0.0.1:8000 by default)."""
    from gateway.server import serve as run_server

    run_server(model=model, host=host, port=port, speculative=speculative,
               num_speculative_tokens=num_speculative_tokens, speculative_model=speculative_model)
