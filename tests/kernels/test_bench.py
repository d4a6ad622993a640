import json

import torch

from kernels.bench import run


def test_bench_reports_every_op_as_json(capsys):
    run(as_json=True)
    report = json.loads(capsys.readouterr().out)
    ops = {r["op"] for r in report["results"]}
    assert ops == {
        "write_kv",
        "paged_attention_decode",
        "paged_attention_prefill",
        "rms_norm + residual",
        "apply_rotary",
        "awq_gemm",
    }
    assert all(r["ref_ms"] > 0 for r in report["results"])
    assert report["kernels_timed"] == torch.cuda.is_available()
    if report["kernels_timed"]:
        assert all(r["max_abs_diff"] < 0.1 for r in report["results"])
