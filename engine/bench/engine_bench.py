"""`flowgate bench engine`: our engine against transformers' generate on the same model and weights."""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.table import Table

from engine.bench import hf_baseline, workloads
from engine.bench.workloads import Workload
from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import GenerateRequest, SamplingParams

console = Console(stderr=True)


@dataclass
class RunMetrics:
    tok_s: float
    ttft_ms: list[float] = field(default_factory=list)
    tpot_ms: list[float] = field(default_factory=list)


def run(workload: str, num_requests: int | None, model: str, as_json: bool, dtype: str = "auto") -> dict:
    engine = _new_engine(model, dtype)
    vocab = engine.runner.model_config.vocab_size
    if workload == "mixed":
        result = _bench_mixed(engine, vocab, num_requests or 64)
    elif workload == "shared-prefix":
        result = _bench_shared_prefix(engine, vocab, num_requests or 32)
    else:
        raise SystemExit(f"unknown workload {workload!r}: mixed | shared-prefix")
    _report(result, as_json)
    return result


def _new_engine(model: str, dtype: str) -> LLMEngine:
    return LLMEngine(EngineConfig(model=model, dtype=dtype, max_num_seqs=64, max_num_batched_tokens=1024))


def _bench_mixed(engine: LLMEngine, vocab: int, n: int) -> dict:
    burst = workloads.mixed(vocab, n)
    poisson = workloads.mixed(vocab, n, rate=2.0)
    console.print(f"[bold]mixed[/]: {n} requests, {burst.num_output_tokens} output tokens")
    ours = run_flowgate(engine, burst)
    stream = run_flowgate(engine, poisson)
    return {
        **_against_hf(engine, burst, ours),
        **_latency("", ours),
        **_latency("poisson_", stream),
        "poisson_tok_s": stream.tok_s,
    }


def _bench_shared_prefix(engine: LLMEngine, vocab: int, n: int) -> dict:
    work = workloads.shared_prefix(vocab, n)
    console.print(f"[bold]shared-prefix[/]: {n} requests sharing a {2000}-token prefix")
    warmup = workloads.mixed(vocab, 1, seed=1)  # first-call costs (allocator, kernels) are not the prefix's
    run_flowgate(engine, Workload("warmup", warmup.requests))
    cold = run_flowgate(engine, Workload("cold", work.requests[:1])).ttft_ms[0]
    warm = [run_flowgate(engine, Workload("warm", [r])).ttft_ms[0] for r in work.requests[1:9]]
    fresh = _new_engine(str(engine.model_dir), _dtype_name(engine))
    ours = run_flowgate(fresh, work)
    return {
        **_against_hf(engine, work, ours),
        "ttft_cold_ms": cold,
        "ttft_warm_ms": statistics.median(warm),
        "warm_over_cold": statistics.median(warm) / cold,
        "prefix_hit_rate": fresh.kv.prefix_hit_rate,
        **_latency("", ours),
    }


def _against_hf(engine: LLMEngine, work: Workload, ours: RunMetrics) -> dict:
    """The same workload through transformers, sequentially and in static batches; throughput ratios."""
    hf = hf_baseline.load(engine.model_dir, engine.runner.dtype)
    hf_static = hf_baseline.static_batches(hf, work, batch_size=16)
    hf_seq = hf_baseline.sequential(hf, work)
    return {
        "workload": work.name,
        "dtype": _dtype_name(engine),
        "num_requests": len(work.requests),
        "num_output_tokens": work.num_output_tokens,
        "flowgate_tok_s": ours.tok_s,
        "hf_sequential_tok_s": hf_seq,
        "hf_static_tok_s": hf_static,
        "speedup_vs_hf_sequential": ours.tok_s / hf_seq,
        "speedup_vs_hf_static": ours.tok_s / hf_static,
    }


def _dtype_name(engine: LLMEngine) -> str:
    return str(engine.runner.dtype).removeprefix("torch.")


def run_flowgate(engine: LLMEngine, workload: Workload) -> RunMetrics:
    """Replay the workload's arrival times against the engine; greedy, exactly output_len tokens each."""
    pending = sorted(enumerate(workload.requests), key=lambda x: x[1].arrival_s)
    arrived, first, finished, counts = {}, {}, {}, {}
    start = time.perf_counter()
    while pending or engine.has_unfinished():
        now = time.perf_counter() - start
        while pending and pending[0][1].arrival_s <= now:
            i, r = pending.pop(0)
            params = SamplingParams(temperature=0.0, max_tokens=r.output_len, ignore_eos=True)
            engine.add_request(
                GenerateRequest(
                    request_id=f"bench-{workload.name}-{i}-{start}", prompt_token_ids=r.prompt, params=params
                )
            )
            arrived[i] = time.perf_counter()
        if not engine.has_unfinished():
            time.sleep(max(0.0, pending[0][1].arrival_s - (time.perf_counter() - start)))
            continue
        outputs = engine.step()
        t = time.perf_counter()
        for out in outputs:
            i = int(out.request_id.split("-")[-2])
            produced = sum(len(c.token_ids) for c in out.outputs)
            if produced and i not in first:
                first[i] = t
            counts[i] = counts.get(i, 0) + produced
            if out.finished:
                finished[i] = t
    elapsed = time.perf_counter() - start
    metrics = RunMetrics(tok_s=sum(counts.values()) / elapsed)
    for i in arrived:
        metrics.ttft_ms.append((first[i] - arrived[i]) * 1000)
        if counts[i] > 1:
            metrics.tpot_ms.append((finished[i] - first[i]) * 1000 / (counts[i] - 1))
    return metrics


def _pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, round(q * (len(values) - 1)))] if values else 0.0


def _latency(prefix: str, m: RunMetrics) -> dict:
    return {
        f"{prefix}ttft_p50_ms": _pct(m.ttft_ms, 0.5),
        f"{prefix}ttft_p99_ms": _pct(m.ttft_ms, 0.99),
        f"{prefix}tpot_p50_ms": _pct(m.tpot_ms, 0.5),
        f"{prefix}tpot_p99_ms": _pct(m.tpot_ms, 0.99),
    }


def _report(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"flowgate bench engine: {result['workload']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)
