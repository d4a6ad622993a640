"""`flowgate bench kernels`: each Triton kernel against its torch reference on the present device.

On a GPU both sides run compiled/eager and the table shows the speed-up and the largest difference.
Without one, Triton would only run in its interpreter, so just the references are timed: those are
what the engine's CPU path executes every step.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import torch

from kernels.awq_gemm import awq_gemm, awq_gemm_ref, awq_pack
from kernels.kv_write import write_kv, write_kv_ref
from kernels.paged_attention_decode import paged_attention_decode, paged_attention_decode_ref
from kernels.paged_attention_prefill import paged_attention_prefill, paged_attention_prefill_ref
from kernels.rms_norm import rms_norm, rms_norm_ref
from kernels.rotary import apply_rotary, apply_rotary_ref, rope_cos_sin_cache, rope_inv_freq


@dataclass(frozen=True, slots=True)
class Case:
    op: str
    shape: str
    kernel: Callable[[], torch.Tensor]
    ref: Callable[[], torch.Tensor]


@dataclass(frozen=True, slots=True)
class Model:
    """Attention geometry to benchmark: SmolLM2-135M on a CPU, an 8B-class Llama on a GPU."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    hidden: int
    block_size: int = 16


def _paged_kv(model: Model, num_seqs: int, context_len: int, dtype, device):
    blocks_per_seq = -(-context_len // model.block_size)
    shape = (num_seqs * blocks_per_seq, model.block_size, model.num_kv_heads, model.head_dim)
    k_cache = torch.randn(shape, dtype=dtype, device=device)
    v_cache = torch.randn_like(k_cache)
    order = torch.randperm(num_seqs * blocks_per_seq, device=device)
    block_tables = order.view(num_seqs, blocks_per_seq).to(torch.int32)
    return k_cache, v_cache, block_tables


def _decode_case(model: Model, batch: int, context_len: int, dtype, device) -> Case:
    k_cache, v_cache, block_tables = _paged_kv(model, batch, context_len, dtype, device)
    q = torch.randn(batch, model.num_heads, model.head_dim, dtype=dtype, device=device)
    context_lens = torch.full((batch,), context_len, dtype=torch.int32, device=device)
    args = (q, k_cache, v_cache, block_tables, context_lens, model.head_dim**-0.5)
    shape = f"B={batch} ctx={context_len} heads={model.num_heads}/{model.num_kv_heads} d={model.head_dim}"
    return Case(
        "paged_attention_decode",
        shape,
        lambda: paged_attention_decode(*args),
        lambda: paged_attention_decode_ref(*args),
    )


def _prefill_case(model: Model, num_seqs: int, q_len: int, prefix_len: int, dtype, device) -> Case:
    context_len = prefix_len + q_len
    k_cache, v_cache, block_tables = _paged_kv(model, num_seqs, context_len, dtype, device)
    q = torch.randn(num_seqs * q_len, model.num_heads, model.head_dim, dtype=dtype, device=device)
    starts = torch.arange(0, num_seqs * q_len + 1, q_len, dtype=torch.int32, device=device)
    context_lens = torch.full((num_seqs,), context_len, dtype=torch.int32, device=device)
    args = (q, k_cache, v_cache, block_tables, starts, context_lens, model.head_dim**-0.5, q_len)
    shape = f"{num_seqs}x{q_len} tokens, prefix {prefix_len}"
    return Case(
        "paged_attention_prefill",
        shape,
        lambda: paged_attention_prefill(*args),
        lambda: paged_attention_prefill_ref(*args),
    )


def _kv_write_case(model: Model, num_tokens: int, dtype, device) -> Case:
    key = torch.randn(num_tokens, model.num_kv_heads, model.head_dim, dtype=dtype, device=device)
    value = torch.randn_like(key)
    k_cache, v_cache, _ = _paged_kv(model, 1, 2 * num_tokens, dtype, device)
    slots = torch.randperm(k_cache.shape[0] * model.block_size, device=device)[:num_tokens]
    caches = {op: (k_cache.clone(), v_cache.clone()) for op in (write_kv, write_kv_ref)}

    def call(op):
        op(key, value, *caches[op], slots)
        return caches[op][0]

    return Case("write_kv", f"T={num_tokens}", lambda: call(write_kv), lambda: call(write_kv_ref))


def _rms_norm_case(model: Model, num_tokens: int, dtype, device) -> Case:
    x = torch.randn(num_tokens, model.hidden, dtype=dtype, device=device)
    residual = torch.randn_like(x)
    weight = torch.randn(model.hidden, dtype=dtype, device=device)
    return Case(
        "rms_norm + residual",
        f"{num_tokens}x{model.hidden}",
        lambda: rms_norm(x, weight, 1e-5, residual)[0],
        lambda: rms_norm_ref(x, weight, 1e-5, residual)[0],
    )


def _rotary_case(model: Model, num_tokens: int, dtype, device) -> Case:
    q = torch.randn(num_tokens, model.num_heads, model.head_dim, dtype=dtype, device=device)
    k = torch.randn(num_tokens, model.num_kv_heads, model.head_dim, dtype=dtype, device=device)
    positions = torch.randint(0, 4096, (num_tokens,), device=device)
    cache = rope_cos_sin_cache(rope_inv_freq(model.head_dim, 10000.0).to(device), 4096, dtype)
    q_kernel, k_kernel = q.clone(), k.clone()
    # The kernel rotates its copy in place: its first call is the one compared, later calls only timed.
    return Case(
        "apply_rotary",
        f"T={num_tokens}",
        lambda: apply_rotary(q_kernel, k_kernel, positions, cache)[0],
        lambda: apply_rotary_ref(q, k, positions, cache)[0],
    )


def _awq_case(M: int, N: int, K: int, dtype, device, group_size: int = 128) -> Case:
    intweight = torch.randint(0, 16, (K, N))
    zeros = torch.randint(0, 16, (K // group_size, N))
    qweight, qzeros = (t.to(device) for t in awq_pack(intweight, zeros))
    scales = (0.01 * torch.rand(K // group_size, N, device=device)).half()
    x = torch.randn(M, K, dtype=dtype, device=device)
    args = (x, qweight, qzeros, scales, group_size)
    return Case(
        "awq_gemm", f"M={M} N={N} K={K} g={group_size}", lambda: awq_gemm(*args), lambda: awq_gemm_ref(*args)
    )


def _cases(device: torch.device) -> list[Case]:
    if device.type == "cuda":
        model, dtype = Model(num_heads=32, num_kv_heads=8, head_dim=128, hidden=4096), torch.bfloat16
        attention = [
            _decode_case(model, 64, 1024, dtype, device),
            _decode_case(model, 4, 8192, dtype, device),  # few sequences, long contexts: split-K territory
            _prefill_case(model, 4, 512, 0, dtype, device),
            _prefill_case(model, 2, 256, 1024, dtype, device),
        ]
        gemms = [_awq_case(M, 4096, 4096, dtype, device) for M in (1, 16, 512)]
    else:
        model, dtype = Model(num_heads=9, num_kv_heads=3, head_dim=64, hidden=576), torch.float32
        attention = [
            _decode_case(model, 64, 300, dtype, device),
            _prefill_case(model, 2, 256, 0, dtype, device),
            _prefill_case(model, 1, 64, 256, dtype, device),
        ]
        gemms = [_awq_case(M, 1536, 512, dtype, device) for M in (1, 64)]
    return [
        _kv_write_case(model, 256, dtype, device),
        *attention,
        _rms_norm_case(model, 256, dtype, device),
        _rotary_case(model, 256, dtype, device),
        *gemms,
    ]


def _time_ms(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100)
    import torch.utils.benchmark as benchmark

    return benchmark.Timer("fn()", globals={"fn": fn}).blocked_autorange(min_run_time=0.5).median * 1e3


def _measure(case: Case, device: torch.device, run_kernels: bool) -> dict:
    result = {"op": case.op, "shape": case.shape, "ref_ms": _time_ms(case.ref, device)}
    if run_kernels:
        diff = (case.kernel().float() - case.ref().float()).abs().max().item()
        kernel_ms = _time_ms(case.kernel, device)
        result |= {"kernel_ms": kernel_ms, "speedup": result["ref_ms"] / kernel_ms, "max_abs_diff": diff}
    return result


def run(as_json: bool = False) -> None:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    run_kernels = device.type == "cuda"
    torch.manual_seed(0)
    results = [_measure(case, device, run_kernels) for case in _cases(device)]
    name = torch.cuda.get_device_name(device) if run_kernels else f"cpu ({torch.get_num_threads()} threads)"
    if as_json:
        print(json.dumps({"device": name, "kernels_timed": run_kernels, "results": results}))
        return
    _print_table(name, run_kernels, results)


def _print_table(device_name: str, run_kernels: bool, results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"Triton kernels vs torch references on {device_name}")
    for column in ("op", "shape", "torch ref (ms)"):
        table.add_column(column, justify="left" if column != "torch ref (ms)" else "right")
    if run_kernels:
        for column in ("triton (ms)", "speed-up", "max |diff|"):
            table.add_column(column, justify="right")
    for r in results:
        row = [r["op"], r["shape"], f"{r['ref_ms']:.3f}"]
        if run_kernels:
            row += [f"{r['kernel_ms']:.3f}", f"{r['speedup']:.2f}x", f"{r['max_abs_diff']:.2e}"]
        table.add_row(*row)
    console.print(table)
    if not run_kernels:
        console.print(
            "[yellow]No GPU: Triton kernels would run in the interpreter (TRITON_INTERPRET=1), which says nothing "
            "about their speed, so only the torch references (the engine's CPU path) were timed.[/yellow]"
        )
