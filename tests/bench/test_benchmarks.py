"""The benchmarks behind docs/benchmarks.md still run: each bench script, with a few requests
and one short round, over real processes, with both load generators and the ``--pin``
placement, prints every figure the docs quote. The numbers themselves are not checked here
(a timed test on a shared machine would only be noise); the benches print them against a
reference measured in the same run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK = ["--rounds", "1", "--requests", "20", "--seconds", "1", "--concurrency", "4"]


def run_bench(script: str, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / script), *QUICK, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def two_cpus() -> list[str]:
    """``--pin`` needs two CPUs; CI machines here have two, a laptop more."""
    return ["--pin"] if len(os.sched_getaffinity(0)) >= 2 else []


@pytest.mark.parametrize("client", ["python", "wrk"])
def test_sidecar_bench_prints_latency_throughput_and_cpu(client: str) -> None:
    out = run_bench("sidecar.py", "--client", client, *two_cpus())
    for figure in (
        "c=1  added p50",
        "c=4 throughput ratio",
        "c=4 CPU per request through the sidecar: sidecar",
        "c=4 machine idle",
    ):
        assert figure in out, out
    assert ("pinned: runtime" in out) == bool(two_cpus()), out


@pytest.mark.parametrize("client", ["python", "wrk"])
def test_router_bench_prints_every_target(client: str) -> None:
    out = run_bench("router.py", "--client", client, *two_cpus())
    for figure in (
        "added per hop, 1-step graph",
        "added per hop, 3-step sequence",
        "added, 3-way ensemble",
        "1-step graph throughput / direct",
        "1-step router CPU per request at c=4",
        f"client={client}",
    ):
        assert figure in out, out
    for target in ("direct", "one", "seq3", "ens3"):
        assert f"\n{target} " in out, out


def test_runtime_delay_comparison_prints_every_target_and_ratio() -> None:
    out = run_bench(
        "runtime.py", "--compare-delays", "--duration", "0.5", "--warmup", "0.1",
        "--concurrency", "1,8", "--max-batch-size", "8", "--max-delay-ms", "1",
    )  # fmt: skip
    assert "Model zoo.small_mlp():" in out, out
    for c in (1, 8):
        for target in ("fixed-0", "fixed-1ms", "adaptive"):
            assert f"| {target} | {c} |" in out, out
        for fixed in ("fixed-0", "fixed-1ms"):
            assert f"c={c} adaptive/{fixed}: throughput" in out, out
    assert "(envelope " in out, out  # the achieved batch size from /stats, per round


def test_runtime_grpc_comparison_prints_every_protocol_and_ratio() -> None:
    out = run_bench(
        "runtime.py", "--compare-grpc", "--duration", "0.5", "--warmup", "0.1",
        "--concurrency", "1,8",
    )  # fmt: skip
    assert "one process serving REST and gRPC" in out, out
    for c in (1, 8):
        for protocol in ("rest-json", "rest-binary", "grpc"):
            assert f"| {protocol} | {c} |" in out, out
        for rest in ("rest-json", "rest-binary"):
            assert f"c={c} grpc/{rest}: throughput" in out, out
    rounds = [line for line in out.splitlines() if line.startswith("round ")]
    assert len(rounds) == 6 and all(" errors 0 " in line for line in rounds), out


def test_privacy_bench_prints_detector_costs_and_router_on_off() -> None:
    out = run_bench("privacy.py", *two_cpus())
    assert "detector cost, us per KB of text" in out, out
    for detector in ("email", "phone", "payment-card", "iban", "ipv4", "ipv6",
                     "national-id:us-ssn", "regex:employee-id", "normalize", "scanner"):  # fmt: skip
        assert f"\n{detector} " in out, out
    for target in ("off", "scan", "redact"):
        assert f"\n{target} " in out, out
    assert "added by scanning, p50" in out and "added by redacting, p50" in out, out


def run_operator_bench(tmp_path: Path, *extra: str) -> str:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "operator.py"), "--graphs", "3", "--idle", "20",
         "--resync-interval", "10", "--envelope-interval", "5",
         "--cluster-dir", str(tmp_path / "cluster"), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={k: v for k, v in os.environ.items() if k != "MODULEMESH_CLUSTER_DIR"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


OPERATOR_FIGURES = (
    "== 3 graphs ==",
    "all reconciled: ",
    "all Ready: ",
    "operator peak RSS: ",
    "operator CPU to Ready: ",
    "writes per graph to Ready: ",
    "events about graphs: ",
    "idle requests per minute: ",
    "idle writes in ",
    "idle CPU: ",
    "load average now: ",
)


@pytest.mark.e2e
def test_operator_bench_prints_every_figure_on_its_own_cluster(tmp_path: Path) -> None:
    """bench/operator.py at 3 graphs with a short idle window, in a cluster directory of its own
    (--keep-graphs), then --restart: a fresh operator over the graphs left, which applies
    nothing, and --down (the bench's own cluster purged); each figure the docs quote printed
    both times."""
    first = run_operator_bench(tmp_path, "--keep-graphs")
    again = run_operator_bench(tmp_path, "--restart", "--down")
    for out in (first, again):
        for figure in OPERATOR_FIGURES:
            assert figure in out, out
    assert "APPLY deployments: " in first, first
    assert "APPLY" not in again, again  # the restart finds every child as it applied it
    assert not (tmp_path / "cluster").exists()  # --down purged only the bench's own cluster
