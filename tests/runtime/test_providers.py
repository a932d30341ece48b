"""Execution provider choice: TensorRT (when asked) and CUDA before CPU, reported everywhere.

The ordering is checked against every availability combination; on this CPU-only machine a
real runtime asked for CUDA falls back to CPU and says so in the log, the model metadata
``parameters`` and the ``x-modulemesh-provider`` header. Thread settings are accepted.
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
