"""Threads from affinity and cgroup quota, the bounded spin, and an idle engine that uses ~no CPU."""

import asyncio
import os
import time

import pytest

from engine import cpu_threads
from engine.client import AsyncEngine
from engine.config import EngineConfig
from engine.protocol import GenerateRequest, SamplingParams

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [("max 100000", AFFINITY), ("50000 100000", 1), ("150000 100000", min(AFFINITY, 2)), ("1 100000", 1)],
)
def test_available_cpus_is_capped_by_the_cgroup_v2_quota(tmp_path, cpu_max, expected):
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert cpu_threads.available_cpus(tmp_path) == expected


def test_available_cpus_reads_cgroup_v1_and_ignores_garbage(tmp_path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cpu_threads.available_cpus(tmp_path) == 1
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpu_threads.available_cpus(tmp_path) == AFFINITY
    (tmp_path / "cpu.max").write_text("nonsense")
    assert cpu_threads.available_cpus(tmp_path) == AFFINITY


def test_openmp_settings_keep_what_the_user_set(monkeypatch):
    for name in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"):
        monkeypatch.delenv(name, raising=False)
    cpu_threads.configure_openmp(3)
    assert os.environ["OMP_NUM_THREADS"] == "3"
    assert os.environ["GOMP_SPINCOUNT"] == str(cpu_threads.DEFAULT_SPINCOUNT)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    cpu_threads.configure_openmp(3)
    assert os.environ["OMP_NUM_THREADS"] == "1" and "GOMP_SPINCOUNT" not in os.environ


def _cpu_seconds(pid: int) -> float:
    """user + system CPU time of every thread of `pid` (/proc/<pid>/stat fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.asyncio(loop_scope="session")
async def test_idle_engine_uses_no_cpu(bundled_model_dir, monkeypatch):
    """With the serving wait policy (not the test suite's PASSIVE): after a request, the engine process sleeps."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    engine = await AsyncEngine.start(
        EngineConfig(model=str(bundled_model_dir), dtype="float32", kv_cache_bytes=16 << 20, max_model_len=512)
    )
    try:
        pid = engine.process.pid
        request = GenerateRequest(request_id="warm", prompt="Hello", params=SamplingParams(max_tokens=8))
        async for _ in engine.generate(request):
            pass
        await asyncio.sleep(0.5)
        before, start = _cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(3.0)
        used, elapsed = _cpu_seconds(pid) - before, time.monotonic() - start
        assert used <= 0.05 * elapsed, f"idle engine used {used:.2f} s of CPU in {elapsed:.1f} s"
    finally:
        await engine.shutdown()
