"""Execution provider choice: TensorRT (when asked) and CUDA before CPU, reported everywhere.

The ordering is checked against every availability combination; on this CPU-only machine a
real runtime asked for CUDA falls back to CPU and says so in the log, the model metadata
``parameters`` and the ``x-modulemesh-provider`` header, unless ``--cpu-fallback refuse``: then
it stays live but never ready, and its readiness answer and log say why. Thread settings are
accepted.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import pytest

from modulemesh import headers
from modulemesh.runtime.model import choose_providers
from tests.runtime.conftest import Runtime

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"


@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        ("auto", [TRT, CUDA, CPU], [CUDA, CPU]),
        ("auto", [CPU], [CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
        ("cuda", [CPU], [CPU]),
        ("tensorrt", [TRT, CUDA, CPU], [TRT, CUDA, CPU]),
        ("tensorrt", [CUDA, CPU], [CUDA, CPU]),
        ("cpu", [TRT, CUDA, CPU], [CPU]),
    ],
)
def test_provider_order(requested: str, available: list[str], expected: list[str]) -> None:
    assert choose_providers(requested, available) == expected


def test_cuda_requested_without_gpu_falls_back_and_reports(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    if CUDA in ort.get_available_providers():
        pytest.skip("a CUDA provider is available here")
    runtime = start_runtime(
        "--model",
        str(models["classifier"]),
        "--name",
        "clf",
        "--provider",
        "cuda",
        "--intra-op-threads",
        "1",
        "--inter-op-threads",
        "1",
    )
    assert "provider cuda requested but onnxruntime offers only" in runtime.log
    assert "on CPUExecutionProvider" in runtime.log
    meta = runtime.client.get("/v2/models/clf")
    assert meta.json()["parameters"]["provider"] == CPU
    assert meta.headers[headers.PROVIDER] == CPU
    assert runtime.client.get("/stats").json()["provider"] == CPU


def test_cpu_fallback_refused_keeps_the_runtime_not_ready_saying_why(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    # A GPU module that may not run on the CPU: asked for CUDA, given only the CPU provider.
    if CUDA in ort.get_available_providers():
        pytest.skip("a CUDA provider is available here")
    runtime = start_runtime(
        "--model", str(models["classifier"]), "--name", "clf",
        "--provider", "cuda", "--cpu-fallback", "refuse", ready=False,
    )  # fmt: skip
    stats = runtime.wait_settled()
    assert stats["ready"] is False
    assert "refusing to serve on the CPU" in stats["reason"], stats
    ready = runtime.client.get("/v2/health/ready")
    assert ready.status_code == 503
    assert "refusing to serve on the CPU" in ready.json()["error"]
    assert runtime.client.post("/v2/models/clf/infer", json={"inputs": []}).status_code == 503
    assert "--cpu-fallback=refuse" in runtime.log and "model clf failed to load" in runtime.log
    assert runtime.client.get("/v2/health/live").status_code == 200  # alive, just not ready


def test_cpu_fallback_refuse_does_not_refuse_a_cpu_module(
    models: dict[str, Path], start_runtime: Callable[..., Runtime]
) -> None:
    # Refuse is about a GPU provider missing: a module that asked for the CPU serves on it.
    runtime = start_runtime(
        "--model", str(models["classifier"]), "--name", "clf",
        "--provider", "cpu", "--cpu-fallback", "refuse",
    )  # fmt: skip
    assert runtime.client.get("/v2/models/clf").json()["parameters"]["provider"] == CPU
