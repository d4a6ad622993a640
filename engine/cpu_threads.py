"""How many CPU threads the engine uses, and how they wait: right for a container or a shared host. Torch-free.

Threads: the CPUs this process may run on (its affinity mask, which taskset / cpusets / Kubernetes pin) capped
by its cgroup's CPU quota (docker --cpus, Kubernetes limits: cpu.max), never os.cpu_count(), which counts the
host's CPUs. More threads than the quota lets run at once only queue for it.

Waiting: between two ops of a step, GOMP's threads spin before they sleep. Spinning keeps the next op's start
fast (on 32 concurrent chats it served ~1.6x the tokens/s of OMP_WAIT_POLICY=PASSIVE), but GOMP's default spin
(GOMP_SPINCOUNT 300,000 iterations, milliseconds) means that when a neighbour process holds one of the cores,
the threads waiting at each barrier burn the rest of theirs for nothing: a request measured 4-7x slower than
PASSIVE next to a compile at nice 15. A bounded spin keeps the fast hand-off between back-to-back ops (their
gaps are tens of microseconds) and sleeps soon when a peer is descheduled. An idle engine sleeps either way:
its loop blocks on its inbox, and OpenMP threads stop spinning within the spin bound.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

# ~tens of microseconds of spinning on a current x86 core: covers the gap between two ops of a step.
# Measured with `flowgate bench serve --noisy` (docs/cpu-serving.md).
DEFAULT_SPINCOUNT = 10_000


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
