"""`flowgate bench serve`: serving speed through HTTP, as a user sees it, for each weight format side by side.

One `flowgate serve` process per configuration (fp32, bf16, int8, int4), started in turn; each is driven by a
closed-loop load generator: `concurrency` clients, each streaming one /v1/completions request after another
(a ~160-token prompt, a fixed number of output tokens with ignore_eos, greedy). Per row: output tok/s over the
whole run, TTFT (request sent -> first token) and TPOT ((last token - first token) / (tokens - 1)) p50/p99.

`--baseline-url` runs the same load against another OpenAI-compatible server (e.g. llama.cpp's llama-server,
or an older flowgate) in the same run; every row then carries its ratio to the baseline at that concurrency.
`--noisy` measures each row a second time while a CPU-burning neighbour (one busy process per CPU this
process may use, at nice 15, as a background compile would run) shares the machine.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)
READY_TIMEOUT_S = 600.0
NOISY_NICE = 15
# Each configuration: the FLOWGATE_* environment it is served with.
CONFIGS = {
    "fp32": {"FLOWGATE_DTYPE": "float32", "FLOWGATE_QUANTIZATION": "none"},
    "bf16": {"FLOWGATE_DTYPE": "bfloat16", "FLOWGATE_QUANTIZATION": "none"},
    "int8": {"FLOWGATE_DTYPE": "float32", "FLOWGATE_QUANTIZATION": "int8"},
    "int4": {"FLOWGATE_DTYPE": "float32", "FLOWGATE_QUANTIZATION": "int4"},
}
# Varied words so the tokenizer does not merge them into a few long tokens; ~1.1 tokens per word.
_TEXT = (
    "the river carried small boats past old stone houses while children counted clouds and a baker sold warm "
    "bread to travellers who had walked since dawn across hills covered in heather and quiet farms"
)
_WORDS = _TEXT.split(" ")


@dataclass
class Row:
    server: str  # a configuration name, or "baseline"
    concurrency: int
    noisy: bool
    tok_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    tpot_p50_ms: float
    tpot_p99_ms: float
    requests: int


def prompt(num_words: int = 145) -> str:
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(num_words))


def run(
    *,
    model: str,
    configs: list[str],
    concurrency: list[int],
    max_tokens: int,
    rounds: int,
    baseline_url: str | None,
    baseline_model: str | None,
    noisy: bool,
    as_json: bool,
) -> dict:
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        raise SystemExit(f"unknown configurations {unknown}: choose from {', '.join(CONFIGS)}")
    rows: list[Row] = []
    if baseline_url:
        name = baseline_model or _served_model(baseline_url)
        rows += _measure_all("baseline", baseline_url, name, concurrency, max_tokens, rounds, noisy)
    for config in configs:
        with _served(model, CONFIGS[config]) as url:
            rows += _measure_all(config, url, _served_model(url), concurrency, max_tokens, rounds, noisy)
    result = _summary(rows, configs)
    _print_table(rows)
    if as_json:
        print(json.dumps(result))
    return result


def _measure_all(server, url, model, concurrency, max_tokens, rounds, noisy) -> list[Row]:
    rows = []
    asyncio.run(_load(url, model, 1, max_tokens, 1))  # warm-up: first-request costs stay out of the rows
    for c in concurrency:
        for with_neighbour in (False, True) if noisy else (False,):
            with _neighbour() if with_neighbour else _nothing():
                row = asyncio.run(_load(url, model, c, max_tokens, rounds))
            rows.append(Row(server=server, concurrency=c, noisy=with_neighbour, **row))
            tag = " (noisy)" if with_neighbour else ""
            console.print(f"{server} c={c}{tag}: {row['tok_s']:.1f} tok/s, TPOT p50 {row['tpot_p50_ms']:.0f} ms")
    return rows


async def _load(url: str, model: str, concurrency: int, max_tokens: int, rounds: int) -> dict:
    """`concurrency` closed-loop clients, each sending `rounds` streaming requests back to back."""
    ttft, tpot, tokens = [], [], 0
    body = {
        "model": model,
        "prompt": prompt(),
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
    }
    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(600.0), limits=limits) as client:

        async def one_client() -> None:
            nonlocal tokens
            for _ in range(rounds):
                first, last, n = await _stream(client, body)
                tokens += n
                ttft.append(first * 1000)
                if n > 1:
                    tpot.append((last - first) * 1000 / (n - 1))

        start = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return {
        "tok_s": tokens / elapsed,
        "ttft_p50_ms": _pct(ttft, 50),
        "ttft_p99_ms": _pct(ttft, 99),
        "tpot_p50_ms": _pct(tpot, 50),
        "tpot_p99_ms": _pct(tpot, 99),
        "requests": len(ttft),
    }


async def _stream(client: httpx.AsyncClient, body: dict) -> tuple[float, float, int]:
    """(seconds to the first token, seconds to the last, output tokens) of one streamed completion."""
    sent = time.perf_counter()
    first = last = None
    chunks = usage = 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        if response.status_code != 200:
            raise RuntimeError(f"{response.status_code}: {(await response.aread())[:500]!r}")
        async for line in response.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                usage = event["usage"]["completion_tokens"]
            if any(choice.get("text") for choice in event.get("choices", ())):
                last = time.perf_counter()
                first = first or last
                chunks += 1
    if first is None:
        raise RuntimeError("the stream carried no tokens")
    return first - sent, last - sent, usage or chunks


def _pct(values: list[float], p: int) -> float:
    if len(values) < 2:
        return values[0] if values else float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


def _summary(rows: list[Row], configs: list[str]) -> dict:
    quiet = {(r.server, r.concurrency): r for r in rows if not r.noisy}
    noisy = {(r.server, r.concurrency): r for r in rows if r.noisy}
    levels = sorted({r.concurrency for r in rows})
    lo, hi = levels[0], levels[-1]
    best = max(configs, key=lambda c: quiet[(c, lo)].tok_s)
    result = {
        "config": best,
        "tok_s_c1" if lo == 1 else f"tok_s_c{lo}": quiet[(best, lo)].tok_s,
        f"tok_s_c{hi}": max(quiet[(c, hi)].tok_s for c in configs),
        f"config_c{hi}": max(configs, key=lambda c: quiet[(c, hi)].tok_s),
    }
    if ("baseline", lo) in quiet:
        result["ratio_c1" if lo == 1 else f"ratio_c{lo}"] = result[_key(lo)] / quiet[("baseline", lo)].tok_s
        result[f"ratio_c{hi}"] = result[f"tok_s_c{hi}"] / quiet[("baseline", hi)].tok_s
    if noisy:
        # how much slower each of our rows got with the neighbour (quiet tok/s / noisy tok/s); worst one
        result["noisy_slowdown_max"] = max(
            quiet[k].tok_s / r.tok_s for k, r in noisy.items() if k[0] != "baseline"
        )
    result["rows"] = [asdict(r) for r in rows]
    return result


def _key(level: int) -> str:
    return "tok_s_c1" if level == 1 else f"tok_s_c{level}"


def _print_table(rows: list[Row]) -> None:
    base = {(r.concurrency, r.noisy): r.tok_s for r in rows if r.server == "baseline"}
    table = Table(title="flowgate bench serve (output tok/s; TTFT and TPOT in ms)")
    for column in ("server", "conc.", "neighbour", "tok/s", "vs baseline", "TTFT p50", "TTFT p99", "TPOT p50",
                   "TPOT p99"):
        table.add_column(column, justify="right")
    for r in rows:
        ratio = base.get((r.concurrency, r.noisy))
        table.add_row(
            r.server, str(r.concurrency), "noisy" if r.noisy else "-", f"{r.tok_s:.1f}",
            f"{r.tok_s / ratio:.2f}x" if ratio else "", f"{r.ttft_p50_ms:.0f}", f"{r.ttft_p99_ms:.0f}",
            f"{r.tpot_p50_ms:.1f}", f"{r.tpot_p99_ms:.1f}",
        )
    console.print(table)


def _served_model(url: str) -> str:
    return httpx.get(f"{url}/v1/models", timeout=30).json()["data"][0]["id"]


class _served:
    """A `flowgate serve` subprocess with `env` on a free port; yields its base URL."""

    def __init__(self, model: str, env: dict[str, str]):
        self.model, self.env = model, env

    def __enter__(self) -> str:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile(prefix="flowgate-bench-serve-", suffix=".log", delete=False)
        root = Path(__file__).resolve().parent.parent
        env = {**os.environ, "PYTHONPATH": str(root), "FLOWGATE_LOG_LEVEL": "warning", **self.env}
        cmd = [sys.executable, "-c", "from gateway.cli import app; app()", "serve", "--port", str(port)]
        self.process = subprocess.Popen([*cmd, "--model", self.model], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"flowgate serve exited: {Path(self.log.name).read_text()[-3000:]}")
            try:
                if httpx.get(f"{url}/ready", timeout=5).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.__exit__()
        raise RuntimeError(f"flowgate serve was not ready after {READY_TIMEOUT_S:.0f} s")

    def __exit__(self, *exc) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        os.unlink(self.log.name)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return None


class _neighbour:
    """One CPU-burning process per CPU this process may use, at nice NOISY_NICE, for the `with` block."""

    def __enter__(self):
        ctx = mp.get_context("spawn")
        self.procs = [ctx.Process(target=_burn, daemon=True) for _ in os.sched_getaffinity(0)]
        for p in self.procs:
            p.start()
        return self

    def __exit__(self, *exc):
        for p in self.procs:
            p.terminate()
        for p in self.procs:
            p.join()


def _burn() -> None:
    os.nice(NOISY_NICE)
    x = 0
    while True:
        x = (x * 1103515245 + 12345) & 0xFFFFFFFF
