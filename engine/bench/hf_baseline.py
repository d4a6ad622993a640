"""Hugging Face transformers baselines on the same model and weights: sequential and static batches."""

from __future__ import annotations

import time

import torch
from rich.progress import Progress

from engine.bench.workloads import Workload


def load(model_dir, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()


@torch.inference_mode()
def _generate(model, prompts: list[list[int]], new_tokens: int) -> None:
    width = max(len(p) for p in prompts)
    pad = model.generation_config.pad_token_id or 0
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])  # left padding
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    model.generate(input_ids, attention_mask=mask, do_sample=False, max_new_tokens=new_tokens,
                   min_new_tokens=new_tokens, pad_token_id=pad)


def sequential(model, workload: Workload) -> float:
    """Useful output tokens per second, one request at a time."""
    start = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task("HF sequential generate", total=len(workload.requests))
        for r in workload.requests:
            _generate(model, [r.prompt], r.output_len)
            progress.advance(task)
    return workload.num_output_tokens / (time.perf_counter() - start)


def static_batches(model, workload: Workload, batch_size: int) -> float:
    """Useful output tokens per second in padded batches of arrival order (each runs to its longest)."""
    reqs = workload.requests
    start = time.perf_counter()
    with Progress(transient=True) as progress:
        task = progress.add_task(f"HF static batches of {batch_size}", total=len(reqs))
        for i in range(0, len(reqs), batch_size):
            batch = reqs[i : i + batch_size]
            _generate(model, [r.prompt for r in batch], max(r.output_len for r in batch))
            progress.advance(task, len(batch))
    return workload.num_output_tokens / (time.perf_counter() - start)
