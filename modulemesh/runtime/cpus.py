"""How many CPUs this process may really use: its affinity mask and its cgroup's CPU quota.

onnxruntime's own default (``intra_op_num_threads = 0``) is one thread per physical core of
the machine, and it pins those threads to cores itself. In a pod that is the node's core count
(64 on a GPU node) under a limit of a few CPUs: threads throttled by the CFS quota, or pinned
outside a CPU-manager cpuset. So the runtime sizes the pool to what the container may use.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

__all__ = ["available_cpus", "cgroup_quota"]

CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_quota(root: Path = CGROUP_ROOT) -> float | None:
    """CPUs allowed by the cgroup's CFS quota (v2 ``cpu.max`` or v1 ``cfs_quota_us``), if any."""
    try:
        quota, _, period = (root / "cpu.max").read_text().strip().partition(" ")
        if quota == "max":
            return None
        return int(quota) / int(period or "100000")
    except (OSError, ValueError):
        pass
    for v1 in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        try:
            quota_us = int((root / v1 / "cpu.cfs_quota_us").read_text())
            period_us = int((root / v1 / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    return None


def available_cpus(root: Path = CGROUP_ROOT) -> int:
    """Whole CPUs this process can run on at once: affinity, capped by the quota rounded up."""
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_quota(root)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)
