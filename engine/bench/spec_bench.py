"""`flowgate bench spec`: speculative decoding off / ngram / draft on the same engine config, side by side.

Each workload runs closed-loop at concurrency 1, 4 and 32 (a new request starts when one finishes), greedy;
tok/s counts emitted tokens over wall time, best of `rounds` with the modes interleaved. Greedy output must be the same in every mode.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from engine import assets
from engine.bench import spec_workloads
from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.protocol import GenerateRequest, SamplingParams

console = Console(stderr=True)
CONCURRENCY = (1, 4, 32)
DRAFT_LAYERS = 4  # the default draft model: the target's first layers (no second model ships with us)


def run(model: str, max_tokens: int, draft_model: str | None, dtype: str, k: int, as_json: bool, rounds: int = 2,
        threads: int | None = None,
        concurrency: tuple[int, ...] = CONCURRENCY, modes: tuple[str, ...] = ("off", "ngram", "draft")) -> dict:
    engines = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in modes:
            if mode == "draft" and draft_model is None:
                draft_model = str(truncated_draft(Path(assets.resolve(model)), Path(tmp), DRAFT_LAYERS))
            engines[mode] = LLMEngine(EngineConfig(
                model=model, dtype=dtype, max_num_seqs=64, max_num_batched_tokens=1024, num_threads=threads, speculative=mode,
                num_speculative_tokens=k, speculative_model=draft_model if mode == "draft" else None))
        tokenizer = engines[modes[0]].tokenizer
        workloads = {
            "copy": [tokenizer.encode(tokenizer.apply_chat_template(m)) for m in spec_workloads.copy_heavy()],
            "chat": [tokenizer.encode(tokenizer.apply_chat_template(m)) for m in spec_workloads.chat()],
        }
        for engine in engines.values():  # first-call costs (allocator, kernels) are nobody's
            engine.generate([workloads["chat"][0]], SamplingParams(temperature=0.0, max_tokens=8))
        result: dict = {"dtype": str(engines[modes[0]].runner.dtype).removeprefix("torch."),
                        "num_speculative_tokens": k, "max_tokens": max_tokens}
        identical = True
        for name, prompts in workloads.items():
            for c in concurrency:
                num_requests = {1: 3, 4: 12}.get(c, c)  # c1: one of each kind
                batch = [prompts[i % len(prompts)] for i in range(num_requests)]
                outputs, best = {}, dict.fromkeys(engines, 0.0)
                before = {mode: engine.stats() for mode, engine in engines.items()}
                for _ in range(rounds):  # modes interleaved, best of rounds: the machine is shared
                    for mode, engine in engines.items():
                        tok_s, outputs[mode] = closed_loop(engine, batch, c, max_tokens)
                        best[mode] = max(best[mode], tok_s)
                        identical &= outputs[mode] == outputs[modes[0]]
                for mode, engine in engines.items():
                    key = f"{mode}_c{c}_{name}"
                    result[f"tok_s_{key}"] = best[mode]
                    if mode != "off":
                        stats = engine.stats()
                        num_drafted = stats.spec_draft_tokens - before[mode].spec_draft_tokens
                        num_accepted = stats.spec_accepted_tokens - before[mode].spec_accepted_tokens
                        result[f"acceptance_{key}"] = num_accepted / max(num_drafted, 1)
                        result[f"speedup_{key}"] = best[mode] / best["off"]
                    console.print(f"{name} c{c} {mode}: {best[mode]:.1f} tok/s")
        result["greedy_identical"] = identical
    _report(result, as_json, modes, concurrency)
    return result


def closed_loop(engine: LLMEngine, prompts: list[list[int]], concurrency: int, max_tokens: int):
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    pending = list(enumerate(prompts))
    tokens: dict[int, list[int]] = {}
    in_flight = 0
    start = time.perf_counter()
    while pending or engine.has_unfinished():
        while pending and in_flight < concurrency:
            i, prompt = pending.pop(0)
            engine.add_request(GenerateRequest(request_id=f"spec-{start}-{i}", prompt_token_ids=prompt, params=params))
            in_flight += 1
        for out in engine.step():
            i = int(out.request_id.rsplit("-", 1)[1])
            tokens.setdefault(i, []).extend(t for c in out.outputs for t in c.token_ids)
            in_flight -= out.finished
    elapsed = time.perf_counter() - start
    return sum(map(len, tokens.values())) / elapsed, [tokens[i] for i in range(len(prompts))]


def truncated_draft(model_dir: Path, out: Path, num_layers: int) -> Path:
    """A draft made of the target's first `num_layers` layers (same embeddings, head and tokenizer)."""
    import shutil

    from safetensors.torch import load_file, save_file

    config = json.loads((model_dir / "config.json").read_text())
    num_layers = config["num_hidden_layers"] = min(num_layers, config["num_hidden_layers"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config))
    tensors = {}
    for shard in model_dir.glob("*.safetensors"):
        for name, tensor in load_file(shard).items():
            parts = name.split(".")
            if "layers" in parts and int(parts[parts.index("layers") + 1]) >= num_layers:
                continue
            tensors[name] = tensor
    save_file(tensors, out / "model.safetensors")
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        if (model_dir / name).exists():
            shutil.copy(model_dir / name, out / name)
    return out


def _report(result: dict, as_json: bool, modes, concurrency) -> None:
    table = Table(title=f"flowgate bench spec ({result['dtype']}, k={result['num_speculative_tokens']})")
    for col in ("workload", "conc", *[f"{m} tok/s" for m in modes], *[f"{m} x / acc" for m in modes if m != "off"]):
        table.add_column(col, justify="right")
    for name in ("copy", "chat"):
        for c in concurrency:
            row = [name, str(c)] + [f"{result[f'tok_s_{m}_c{c}_{name}']:.1f}" for m in modes]
            row += [f"{result[f'speedup_{m}_c{c}_{name}']:.2f}x / {result[f'acceptance_{m}_c{c}_{name}']:.0%}"
                    for m in modes if m != "off"]
            table.add_row(*row)
    Console(stderr=as_json).print(table)
    console.print(f"greedy_identical: {result['greedy_identical']}")
    if as_json:
        summary = {k: result[k] for k in ("speedup_ngram_c1_copy", "speedup_ngram_c32_copy") if k in result}
        print(json.dumps({**result, **summary, "greedy_identical": result["greedy_identical"]}))
