"""Compile every kernel ahead of time for NVIDIA GPUs, none needed: `python -m tests.kernels.gpu_compile [ARCH ...]`.

Run in a process without TRITON_INTERPRET (under it, @triton.jit yields interpreter functions). Prints
one JSON line per kernel and target: its name, the constants it was built with, and the shared memory
it needs or the compiler's error. Configurations are the largest each launcher picks.
"""

from __future__ import annotations

import inspect
import json
import sys

import triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from kernels import awq_gemm, kv_write, paged_attention_decode, paged_attention_prefill, rms_norm, rotary

DEFAULT_ARCHS = (90,)  # H100 (wgmma); 80 (A100, mma.sync) on request


def _compile(kernel, arch: int, types: dict[str, str], constants: dict, num_warps: int = 4) -> dict:
    params = list(inspect.signature(kernel.fn).parameters)
    signature = {p: "constexpr" if p in constants else types.get(p, "i32") for p in params}
    source = ASTSource(kernel, signature, constexprs={(params.index(k),): v for k, v in constants.items()})
    report = {
        "kernel": kernel.fn.__name__,
        "arch": arch,
        "constants": {k: str(v) for k, v in constants.items()},
    }
    try:
        compiled = triton.compile(
            source, target=GPUTarget("cuda", arch, 32), options={"num_warps": num_warps}
        )
    except Exception as exc:  # reported, not raised: the test lists every failure at once
        return report | {"error": f"{type(exc).__name__}: {exc}"[:2000]}
    return report | {"shared": compiled.metadata.shared}


def _attention_jobs(dt: str, tl_dtype, precision: str):
    cache = {"k_cache_ptr": f"*{dt}", "v_cache_ptr": f"*{dt}", "block_tables_ptr": "*i32", "qk_scale": "fp32"}
    dot = dict(DOT_DTYPE=tl_dtype, DOT_PRECISION=precision)
    decode = cache | {"q_ptr": f"*{dt}", "out_ptr": f"*{dt}", "context_lens_ptr": "*i32"}
    decode |= {"part_acc_ptr": "*fp32", "part_max_ptr": "*fp32", "part_denom_ptr": "*fp32"}
    yield (
        paged_attention_decode._decode_split_kernel,
        decode,
        dict(SINGLE_SPLIT=False, BLOCK_G=16, BLOCK_N=64, BLOCK_D=128) | dot,
    )
    prefill = cache | {
        "q_ptr": f"*{dt}",
        "out_ptr": f"*{dt}",
        "query_start_loc_ptr": "*i32",
        "context_lens_ptr": "*i32",
    }
    block_n = 32 if dt == "fp32" else 64
    yield (
        paged_attention_prefill._prefill_kernel,
        prefill,
        dict(BLOCK_M=64, BLOCK_N=block_n, BLOCK_D=128) | dot,
    )


def _jobs():
    for dt, tl_dtype, precision in (("bf16", tl.bfloat16, "tf32"), ("fp32", tl.float32, "ieee")):
        yield from _attention_jobs(dt, tl_dtype, precision)
    reduce = {"out_ptr": "*bf16", "part_acc_ptr": "*fp32", "part_max_ptr": "*fp32", "part_denom_ptr": "*fp32"}
    yield paged_attention_decode._decode_reduce_kernel, reduce, dict(BLOCK_S=32, BLOCK_D=128)
    kv = {p: "*bf16" for p in ("key_ptr", "value_ptr", "k_cache_ptr", "v_cache_ptr")} | {
        "slot_mapping_ptr": "*i64"
    }
    yield kv_write._kv_write_kernel, kv, dict(BLOCK_H=8, BLOCK_D=128)
    norm = {p: "*bf16" for p in ("x_ptr", "residual_ptr", "weight_ptr", "out_ptr", "sum_ptr")} | {
        "eps": "fp32"
    }
    yield rms_norm._rms_norm_kernel, norm, dict(HAS_RESIDUAL=True, BLOCK=8192)
    rope = {"q_ptr": "*bf16", "k_ptr": "*bf16", "positions_ptr": "*i64", "cos_sin_ptr": "*fp32"}
    yield rotary._rotary_kernel, rope, dict(BLOCK_HQ=64, BLOCK_HK=8, BLOCK_HALF=64)
    awq = {"x_ptr": "*bf16", "qweight_ptr": "*i32", "qzeros_ptr": "*i32", "scales_ptr": "*fp16"}
    dot = dict(DOT_DTYPE=tl.bfloat16, DOT_PRECISION="tf32")
    yield (
        awq_gemm._awq_gemm_kernel,
        awq | {"out_ptr": "*fp32"},
        dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=64) | dot,
    )
    yield (
        awq_gemm._awq_gemm_kernel,
        awq | {"out_ptr": "*bf16"},
        dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=32) | dot,
    )


def main(archs: tuple[int, ...]) -> None:
    for arch in archs:
        for kernel, types, constants in _jobs():
            num_warps = 8 if constants.get("BLOCK_M") == 128 or constants.get("BLOCK") == 8192 else 4
            print(json.dumps(_compile(kernel, arch, types, constants, num_warps)), flush=True)


if __name__ == "__main__":
    main(tuple(int(arch) for arch in sys.argv[1:]) or DEFAULT_ARCHS)
