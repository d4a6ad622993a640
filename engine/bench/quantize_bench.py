"""`flowgate bench quantize`: fp32 against round-to-nearest int4 and AWQ int4 on the same model, and the CPU
serving formats (`--quantization int8`, and for a bundled model its int4 variant) as `flowgate serve` runs them.

Both int4 checkpoints are written by our quantizer (same group size, same AutoAWQ format) and served through
the engine's loader, so what is measured is what `flowgate serve` runs:

    perplexity       teacher-forced, on the held-out text engine/bench/heldout.txt (disjoint from calibration);
                     top-1 agreement: how often the argmax next token there equals the fp32 model's
    weight bytes     the quantizable linears (q/k/v/o/gate/up/down): fp16 (and fp32) sizes against
                     qweight + qzeros + scales; whole checkpoint files too (embeddings stay fp16)
    greedy agreement 8 chat prompts x up to 32 tokens (or the end of turn) through LLMEngine, against the fp32
                     model: the fraction of its tokens before the first divergence, and how many
                     continuations match exactly
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.console import Console
from rich.table import Table
from safetensors import safe_open

from engine import assets
from engine.config import EngineConfig
from engine.llm_engine import LLMEngine
from engine.models.loader import load_model
from engine.models.testing import prompt_logits
from engine.protocol import SamplingParams
from engine.quant.awq import quantize_model
from engine.quant.serving import prepare_linears
from engine.tokenizer import Tokenizer

HELDOUT_TEXT = Path(__file__).with_name("heldout.txt")
WINDOW = 512
NUM_GREEDY_TOKENS = 32
CHAT_PROMPTS = (
    "What is the capital of France?",
    "Give me three tips for sleeping better.",
    "Explain what a prime number is to a ten-year-old.",
    "Write a haiku about autumn leaves.",
    "How do I boil an egg?",
    "What causes the seasons on Earth?",
    "Suggest a name for a friendly robot.",
    "Why is the sky blue?",
)

console = Console(stderr=True)


def run(model: str, group_size: int, as_json: bool, awq: bool = True) -> dict:
    source = assets.resolve(model)
    token_ids = Tokenizer.from_dir(source).encode(HELDOUT_TEXT.read_text(encoding="utf-8"))
    serving = serving_formats(model, source, token_ids)
    if not awq:
        _report_serving(serving, as_json)
        return serving
    with tempfile.TemporaryDirectory(prefix="flowgate-quantize-bench-") as tmp:
        awq = quantize_model(source, Path(tmp) / "awq", group_size=group_size, console=console)
        rtn = quantize_model(
            source, Path(tmp) / "rtn", group_size=awq.group_size, activation_aware=False, console=console
        )
        console.print("perplexity and greedy agreement ...")
        reference = greedy_continuations(source)
        ppl_fp32, predicted = heldout_eval(source, token_ids)
        ppl_rtn, predicted_rtn = heldout_eval(rtn.path, token_ids)
        ppl_awq, predicted_awq = heldout_eval(awq.path, token_ids)
        result = {
            "model": str(source),
            "group_size": awq.group_size,
            "heldout_tokens": len(token_ids),
            "awq_seconds": awq.seconds,
            "ppl_fp32": ppl_fp32,
            "ppl_rtn": ppl_rtn,
            "ppl_awq": ppl_awq,
            "rtn_top1_agreement": (predicted_rtn == predicted).float().mean().item(),
            "awq_top1_agreement": (predicted_awq == predicted).float().mean().item(),
            **linear_weight_bytes(awq.path),
            "checkpoint_bytes_fp32": _file_bytes(source),
            "checkpoint_bytes_awq": _file_bytes(awq.path),
            **{f"rtn_{k}": v for k, v in agreement(reference, greedy_continuations(rtn.path)).items()},
            **{f"awq_{k}": v for k, v in agreement(reference, greedy_continuations(awq.path)).items()},
        }
    result |= serving
    _report(result, as_json)
    if not as_json:
        _report_serving(serving, as_json=False)
    return result


def serving_formats(model: str, source: Path, token_ids: list[int]) -> dict:
    """Perplexity, top-1 and greedy agreement of what `flowgate serve --quantization int8|int4` runs."""
    console.print("CPU serving formats: fp32, int8, int4 ...")
    ppl_fp32, predicted = heldout_eval(source, token_ids)
    reference = greedy_continuations(source)
    formats = {"int8": (source, "int8")}
    if model in assets.BUNDLED_MODELS:
        formats["int4"] = (assets.pull_int4(model), "int4")
    result = {"serving_ppl_fp32": ppl_fp32}
    for name, (path, quantization) in formats.items():
        ppl, top1 = heldout_eval(path, token_ids, quantization)
        result[f"serving_ppl_{name}"] = ppl
        result[f"serving_ppl_{name}_vs_fp32"] = ppl / ppl_fp32 - 1
        result[f"serving_{name}_top1_agreement"] = (top1 == predicted).float().mean().item()
        greedy = greedy_continuations(path, quantization)
        result |= {f"serving_{name}_{k}": v for k, v in agreement(reference, greedy).items()}
    return result


def _report_serving(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result))
        return
    table = Table(title="CPU serving formats (flowgate serve --quantization ...)")
    for column in ("weights", "ppl", "vs fp32", "top-1", "greedy agreement"):
        table.add_column(column, justify="left" if column == "weights" else "right")
    table.add_row("fp32", f"{result['serving_ppl_fp32']:.3f}", "", "", "reference")
    for name in ("int8", "int4"):
        if f"serving_ppl_{name}" in result:
            table.add_row(
                name, f"{result[f'serving_ppl_{name}']:.3f}", f"{result[f'serving_ppl_{name}_vs_fp32']:+.2%}",
                f"{result[f'serving_{name}_top1_agreement']:.1%}",
                f"{result[f'serving_{name}_greedy_prefix_fraction']:.1%} prefix, "
                f"{result[f'serving_{name}_greedy_exact_matches']}/{result[f'serving_{name}_greedy_prompts']} exact",
            )
    Console().print(table)


def heldout_eval(path: Path, token_ids: list[int], quantization: str = "auto") -> tuple[float, torch.Tensor]:
    """(perplexity, the argmax next token at every position), teacher-forced over windows of WINDOW tokens."""
    model, _ = load_model(path, torch.float32, "cpu")
    prepare_linears(model, EngineConfig(quantization=quantization), torch.device("cpu"), torch.float32)
    total, predicted = 0.0, []
    for start in range(0, len(token_ids) - 1, WINDOW):
        window = token_ids[start : start + WINDOW + 1]
        logits = prompt_logits(model, window[:-1])
        total += F.cross_entropy(logits, torch.tensor(window[1:]), reduction="sum").item()
        predicted.append(logits.argmax(-1))
    predicted = torch.cat(predicted)
    return math.exp(total / len(predicted)), predicted


def linear_weight_bytes(awq_dir: Path) -> dict:
    """Bytes of the quantized linears as fp32, as fp16, and as AWQ int4 (qweight + qzeros + scales)."""
    elements = awq_bytes = 0
    with safe_open(awq_dir / "model.safetensors", "pt") as f:
        for name in f.keys():  # noqa: SIM118 - safe_open is not a mapping
            if name.endswith((".qweight", ".qzeros", ".scales")):
                tensor = f.get_tensor(name)
                awq_bytes += tensor.numel() * tensor.element_size()
                if name.endswith(".qweight"):
                    elements += tensor.numel() * 8
    return {"weight_bytes_fp32": 4 * elements, "weight_bytes_fp16": 2 * elements, "weight_bytes_awq": awq_bytes}


def greedy_continuations(path: Path, quantization: str = "auto") -> list[list[int]]:
    config = EngineConfig(model=str(path), dtype="float32", kv_cache_bytes=64 << 20, quantization=quantization)
    engine = LLMEngine(config)
    prompts = [engine.tokenizer.apply_chat_template([{"role": "user", "content": p}]) for p in CHAT_PROMPTS]
    params = SamplingParams(temperature=0.0, max_tokens=NUM_GREEDY_TOKENS)
    return [out.outputs[0].token_ids for out in engine.generate(prompts, params)]


def agreement(reference: list[list[int]], candidate: list[list[int]]) -> dict:
    prefixes = [_common_prefix(r, c) for r, c in zip(reference, candidate, strict=True)]
    return {
        "greedy_prefix_fraction": sum(prefixes) / sum(len(r) for r in reference),
        "greedy_exact_matches": sum(r == c for r, c in zip(reference, candidate, strict=True)),
        "greedy_prompts": len(reference),
    }


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def _file_bytes(model_dir: Path) -> int:
    return sum(f.stat().st_size for f in model_dir.iterdir() if f.suffix == ".safetensors")


def _report(result: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2))
        return
    mib = 1 << 20
    table = Table(title=f"flowgate bench quantize: {result['model']} (group size {result['group_size']})")
    columns = ("weights", "ppl", "vs fp32", "top-1", "linear weights", "checkpoint", "greedy agreement")
    for column in columns:
        table.add_column(column, justify="left" if column == "weights" else "right")
    fp32 = result["ppl_fp32"]
    table.add_row(
        "fp32", f"{fp32:.3f}", "", "", f"{result['weight_bytes_fp32'] / mib:.1f} MiB",
        f"{result['checkpoint_bytes_fp32'] / mib:.1f} MiB", "reference",
    )
    table.add_row("fp16", "", "", "", f"{result['weight_bytes_fp16'] / mib:.1f} MiB", "", "")
    for name, key in (("RTN int4", "rtn"), ("AWQ int4", "awq")):
        ppl = result[f"ppl_{key}"]
        table.add_row(
            name, f"{ppl:.3f}", f"+{ppl - fp32:.3f}", f"{result[f'{key}_top1_agreement']:.1%}",
            f"{result['weight_bytes_awq'] / mib:.1f} MiB "
            f"({result['weight_bytes_awq'] / result['weight_bytes_fp16']:.1%} of fp16)",
            f"{result['checkpoint_bytes_awq'] / mib:.1f} MiB" if key == "awq" else "same",
            f"{result[f'{key}_greedy_prefix_fraction']:.1%} prefix, "
            f"{result[f'{key}_greedy_exact_matches']}/{result[f'{key}_greedy_prompts']} exact",
        )
    Console().print(table)
    console.print(
        f"held-out text: {result['heldout_tokens']} tokens; top-1: argmax next token equal to fp32's there; "
        f"RTN: round-to-nearest; AWQ quantization took {result['awq_seconds']:.0f} s"
    )
