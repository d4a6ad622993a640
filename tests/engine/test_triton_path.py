"""The CUDA code path (Triton kernels for attention, KV write, RMSNorm and rotary) through the whole model,
run in Triton's interpreter: its logits equal the CPU path's over a prefill, an extend chunk and decodes."""

import pytest
import torch

from engine.models.loader import load_model
from engine.models.testing import Chunk, allocate_kv_caches, run_step


def run_chunks(model, prompt: list[int], block_size: int = 4):
    kv = allocate_kv_caches(model.config, 16, block_size, torch.float32, "cpu")
    table = [7, 2, 9, 0, 5, 11, 3, 1, 13, 4]  # shuffled physical blocks
    first, second = prompt[:9], prompt[9:]
    logits = run_step(model, kv, [], [Chunk(first, 0, table)], block_size)
    logits += run_step(model, kv, [], [Chunk(second, len(first), table)], block_size)
    logits += run_step(model, kv, [Chunk([5], len(prompt), table)], [], block_size)
    return torch.cat(logits)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_triton_kernels_match_cpu_references_through_the_model(arch, tiny_model_dir, monkeypatch):
    model, _ = load_model(tiny_model_dir(arch), torch.float32, torch.device("cpu"))
    prompt = [3 + (i * 37) % 300 for i in range(21)]
    reference = run_chunks(model, prompt)
    monkeypatch.setenv("FLOWGATE_KERNELS", "triton")
    triton = run_chunks(model, prompt)
    assert (triton - reference).abs().max() < 1e-3
    assert reference.std() > 1.0  # random weights give logits far from zero: the comparison means something
