"""dtype=auto on the CPU follows a measurement (cached per CPU), or AMX; never AVX512-BF16 alone."""

import pytest
import torch

from engine import cpu_dtype


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("FLOWGATE_HOME", str(tmp_path))
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    return tmp_path


@pytest.mark.parametrize(("fp32_ms", "bf16_ms", "expected"), [(1.0, 0.5, torch.bfloat16), (1.0, 0.9, torch.float32),
                                                               (1.0, 3.7, torch.float32)])
def test_choice_follows_the_measurement_and_is_cached(home, monkeypatch, fp32_ms, bf16_ms, expected):
    monkeypatch.setattr(cpu_dtype, "_cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    calls = []
    monkeypatch.setattr(cpu_dtype, "measure", lambda: calls.append(1) or (fp32_ms, bf16_ms))
    assert cpu_dtype.cpu_auto_dtype() == expected
    assert cpu_dtype.cpu_auto_dtype() == expected
    assert len(calls) == 1, "the second start reads the cached verdict"
    assert len(list((home / "cpu-dtype").iterdir())) == 1


def test_amx_means_bf16_without_measuring(home, monkeypatch):
    monkeypatch.setattr(cpu_dtype, "_cpu_flags", lambda: {"avx512_bf16", "amx_bf16", "amx_tile"})
    monkeypatch.setattr(cpu_dtype, "measure", lambda: pytest.fail("measured"))
    assert cpu_dtype.cpu_auto_dtype() == torch.bfloat16


def test_measure_times_both_dtypes():
    fp32_ms, bf16_ms = cpu_dtype.measure()
    assert fp32_ms > 0 and bf16_ms > 0
