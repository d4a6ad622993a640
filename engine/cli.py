"""The engine's command groups (models, bench, quantize). Heavy imports happen inside each command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

models_app = typer.Typer(help="Pull, list and locate models in the local cache.", no_args_is_help=True)
bench_app = typer.Typer(help="Benchmarks: each runs the baseline and ours in one run and prints the ratio.")
quantize_app = typer.Typer(help="Quantize a model.", no_args_is_help=True)


@models_app.command("pull")
def models_pull(name: Annotated[str, typer.Argument(help="Model alias")] = "smollm2-135m") -> None:
    """Fetch a bundled model and convert it once into the local cache."""
    from engine import assets

    path = assets.pull(name)
    typer.echo(str(path))


@models_app.command("list")
def models_list() -> None:
    """Show the models in the local cache and the aliases that can be pulled."""
    from engine import assets

    assets.print_models()


@models_app.command("path")
def models_path(name: str) -> None:
    """Print the cache directory of a pulled model."""
    from engine import assets

    typer.echo(str(assets.model_path(name)))


@bench_app.command("engine")
def bench_engine(
    workload: Annotated[str, typer.Option(help="mixed | shared-prefix")] = "mixed",
    requests: Annotated[int | None, typer.Option(help="Shrink the workload to N requests")] = None,
    model: str = "smollm2-135m",
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16 (both engines use it)")] = "auto",
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object")] = False,
) -> None:
    """Our engine against Hugging Face transformers on the same model, weights and dtype."""
    from engine.bench.engine_bench import run

    run(workload=workload, num_requests=requests, model=model, as_json=json, dtype=dtype)


@bench_app.command("kernels")
def bench_kernels(json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Each Triton kernel against its torch reference on the present device."""
    from kernels.bench import run

    run(as_json=json)


@bench_app.command("quantize")
def bench_quantize(
    model: str = "smollm2-135m",
    group_size: int = 128,
    awq: Annotated[bool, typer.Option(help="Also quantize with AWQ and round-to-nearest (minutes)")] = True,
    json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Perplexity and weight bytes of fp32, round-to-nearest int4 and AWQ int4, and of the CPU serving formats
    (int8, the bundled model's int4 variant)."""
    from engine.bench.quantize_bench import run

    run(model=model, group_size=group_size, as_json=json, awq=awq)


@quantize_app.command("awq")
def quantize_awq(
    model: str,
    out: Annotated[Path, typer.Option("--out", help="Output directory")],
    group_size: int = 128,
    calib: Annotated[Path | None, typer.Option(help="Calibration text file")] = None,
) -> None:
    """Activation-aware int4 weight quantization into an AutoAWQ (GEMM) checkpoint."""
    from engine.quant.awq import quantize_model

    quantize_model(model, out, group_size=group_size, calib_path=calib)


@bench_app.command("spec")
def bench_spec(
    model: str = "smollm2-135m",
    max_tokens: Annotated[int, typer.Option(help="Output tokens per request at most (greedy)")] = 128,
    draft_model: Annotated[str | None, typer.Option(help="Draft model dir (default: the target's first 4 layers)")] = None,
    num_speculative_tokens: Annotated[int, typer.Option(help="k, most draft tokens per step")] = 8,
    dtype: Annotated[str, typer.Option(help="auto | float32 | bfloat16")] = "auto",
    modes: Annotated[str, typer.Option(help="Comma-separated: off,ngram,draft (off always runs)")] = "off,ngram,draft",
    rounds: Annotated[int, typer.Option(help="Rounds per cell, modes interleaved; the best counts")] = 2,
    threads: Annotated[int | None, typer.Option(help="torch threads (default: every core)")] = None,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON object as the last line")] = False,
) -> None:
    """Speculative decoding off / ngram / draft on copy-heavy and chat workloads at concurrency 1, 4, 32."""
    from engine.bench.spec_bench import run

    chosen = ("off", *[m for m in modes.split(",") if m in ("ngram", "draft")])
    run(model=model, max_tokens=max_tokens, draft_model=draft_model, dtype=dtype, k=num_speculative_tokens,
        as_json=json, modes=chosen, rounds=rounds, threads=threads)
