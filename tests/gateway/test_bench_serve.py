"""`flowgate bench serve`'s load generator against the real server, and its summary."""

import asyncio

from engine.tokenizer import Tokenizer
from gateway import bench_serve


def test_ignore_eos_generates_max_tokens(client):
    reply = client.completions.create(
        model="smollm2-135m", prompt="Hi", max_tokens=12, temperature=0.0, extra_body={"ignore_eos": True}
    )
    assert reply.usage.completion_tokens == 12


def test_load_measures_streams(server):
    row = asyncio.run(bench_serve._load(server.url, "smollm2-135m", concurrency=2, max_tokens=5, rounds=2))
    assert row["requests"] == 4
    assert row["tok_s"] > 0 and 0 < row["ttft_p50_ms"] <= row["ttft_p99_ms"]
    assert 0 < row["tpot_p50_ms"] <= row["tpot_p99_ms"]


def test_prompt_is_about_160_tokens(bundled_model_dir):
    assert 140 <= len(Tokenizer.from_dir(bundled_model_dir).encode(bench_serve.prompt())) <= 180


def _row(server, c, tok_s, noisy=False):
    return bench_serve.Row(server, c, noisy, tok_s, 1, 2, 3, 4, 1)


def test_summary_picks_the_best_configuration_and_ratios():
    rows = [_row("baseline", 1, 10), _row("baseline", 32, 50), _row("fp32", 1, 12), _row("fp32", 32, 90),
            _row("int4", 1, 30), _row("int4", 32, 80), _row("int4", 1, 20, noisy=True), _row("int4", 32, 80, True)]
    rows += [_row("fp32", 1, 12, True), _row("fp32", 32, 60, True)]
    summary = bench_serve._summary(rows, ["fp32", "int4"])
    assert summary["config"] == "int4" and summary["tok_s_c1"] == 30
    assert summary["tok_s_c32"] == 90 and summary["config_c32"] == "fp32"
    assert summary["ratio_c1"] == 3.0 and summary["ratio_c32"] == 90 / 50
    assert summary["noisy_slowdown_max"] == 1.5
