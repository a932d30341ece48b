"""The runtime sizes onnxruntime's intra-op pool to the CPUs it may use: the cgroup CPU quota
(v2 and v1 layouts, read from fake cgroup trees) caps the affinity mask; and a real runtime
started on one CPU runs a one-thread pool with no thread pinned outside its mask (onnxruntime's
own default would start one per machine core and pin one to the other CPU), and says so in
its metadata."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from modulemesh.runtime.cpus import available_cpus, cgroup_quota

from .conftest import Runtime


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize(
    ("files", "quota"),
    [
        ({"cpu.max": "max 100000\n"}, None),
        ({"cpu.max": "150000 100000\n"}, 1.5),
        ({"cpu.max": "50000\n"}, 0.5),  # period omitted: the kernel's default 100 ms
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
        (
            {"cpu,cpuacct/cpu.cfs_quota_us": "200000", "cpu,cpuacct/cpu.cfs_period_us": "100000"},
            2.0,
        ),
        ({}, None),
        ({"cpu.max": "garbage"}, None),
    ],
)
def test_cgroup_quota(tmp_path: Path, files: dict[str, str], quota: float | None) -> None:
    assert cgroup_quota(write(tmp_path, files)) == quota


def test_the_quota_caps_the_affinity_rounded_up(tmp_path: Path) -> None:
    mask = len(os.sched_getaffinity(0))
    assert available_cpus(write(tmp_path / "none", {})) == mask
    assert available_cpus(write(tmp_path / "half", {"cpu.max": "50000 100000"})) == 1
    assert available_cpus(write(tmp_path / "big", {"cpu.max": "6400000 100000"})) == mask


def _allowed(pid: int) -> dict[str, str]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[task.name] = line.split(":", 1)[1].strip()
    return out


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs to pin one")
def test_a_runtime_on_one_cpu_runs_one_intra_op_thread_inside_its_mask(
    start_runtime: Callable[..., Runtime], models: dict[str, Path]
) -> None:
    cpu = min(os.sched_getaffinity(0))
    runtime = start_runtime("--model", str(models["classifier"]), "--name", "clf", cpus={cpu})
    meta = runtime.client.get("/v2/models/clf").json()
    assert meta["parameters"]["intra_op_threads"] == 1
    assert set(_allowed(runtime.proc.pid).values()) == {str(cpu)}
    assert "with 1 intra-op threads" in runtime.log
