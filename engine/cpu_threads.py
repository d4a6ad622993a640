"""How many CPU threads the engine uses, and how they wait: right for a container or a shared host. Torch-free.

Threads: the CPUs this process may run on (its affinity mask, which taskset / cpusets / Kubernetes pin) capped
by its cgroup's CPU quota (docker --cpus, Kubernetes limits: cpu.max), never os.cpu_count(), which counts the
host's CPUs. More threads than the quota lets run at once only queue for it.

Waiting: between two ops of a step, GOMP's threads spin before they sleep. Spinning keeps the next op's start
fast on an idle host, but GOMP's default spin (GOMP_SPINCOUNT 300,000 iterations) means that when a neighbour
process holds one of the cores, the threads waiting at each barrier burn the rest of theirs for nothing. A
batch-1 int8 decode step of the bundled model on this project's shared 2-core Zen 4 host (load 8-13, runs
interleaved, median of 60 steps):

    OMP_WAIT_POLICY=PASSIVE   24.5 / 25.6 ms        GOMP_SPINCOUNT=1000      22.1 / 21.9 ms
    GOMP_SPINCOUNT=10000      245 / 257 ms          GOMP default (300,000)   391 ms

So the bound is small: it still bridges the microseconds between back-to-back ops of a step and gives the core
up as soon as a peer is descheduled. An idle engine sleeps either way: its loop blocks on its inbox, and
OpenMP threads stop spinning within the bound.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# A few microseconds of spinning: the gap between two ops of a step, not a descheduled peer's time slice.
DEFAULT_SPINCOUNT = 1_000


def available_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by the cgroup CPU quota (rounded up), at least 1."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """The CPU quota in CPUs (cgroup v2 cpu.max, or v1 cfs_quota_us / cfs_period_us); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 or period <= 0 else quota / period
    except (OSError, ValueError):
        return None


def configure_openmp(num_threads: int) -> None:
    """Before torch (and so libgomp) loads in this process: the thread count and a bounded spin. Settings the
    user made (OMP_NUM_THREADS, OMP_WAIT_POLICY, GOMP_SPINCOUNT) are kept."""
    os.environ.setdefault("OMP_NUM_THREADS", str(num_threads))
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", str(DEFAULT_SPINCOUNT))
