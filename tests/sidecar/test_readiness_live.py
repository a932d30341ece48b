"""Readiness and state follow the real runtime through start-up, a crash (SIGKILL) and
recovery; the error rate counts exactly the requests that failed while it was down."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import numpy as np

from modulemesh import oip

from .conftest import free_port, start_runtime, start_sidecar, wait_status


def wait_envelope(url: str, state: str, timeout: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout
    envelope: dict = {}
    while time.monotonic() < deadline:
        envelope = httpx.get(f"{url}/envelope").json()
        if envelope["state"] == state:
            return envelope
        time.sleep(0.1)
    raise AssertionError(f"state never became {state}: {envelope}")


def test_readiness_follows_runtime_start_crash_and_recovery(
    models: dict[str, Path], tmp_path: Path
) -> None:
    runtime_port, port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    data, _ = oip.encode_request({"input": np.ones((1, 8), dtype=np.float32)})
    sidecar = start_sidecar("clf", port, runtime_port, tmp_path / "sidecar.log", "--window", "4")
    runtime = None
    try:
        # Start-up: no runtime yet.
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and "unreachable" in ready.json()["reason"]
        assert httpx.get(f"{url}/livez").status_code == 200
        envelope = wait_envelope(url, "Unhealthy")
        assert "unreachable" in envelope["reason"]
        down = httpx.post(f"{url}/v2/models/clf/infer", content=data)
        assert down.status_code == 502 and "clf" in down.json()["error"]

        runtime = start_runtime(models["clf"], "clf", runtime_port, tmp_path / "runtime.log")
        wait_status(f"{url}/readyz", 200, timeout=60)
        envelope = wait_envelope(url, "Healthy")  # once the 502 has left the 4 s window
        assert envelope["reason"] == "no traffic in window; runtime ready"

        # Crash: 20 good requests, SIGKILL, 20 failing ones.
        with httpx.Client() as client:
            for _ in range(20):
                assert client.post(f"{url}/v2/models/clf/infer", content=data).status_code == 200
            runtime.kill()
            statuses = [
                client.post(f"{url}/v2/models/clf/infer", content=data).status_code
                for _ in range(20)
            ]
            envelope = client.get(f"{url}/envelope").json()
            ready = client.get(f"{url}/readyz")
        assert statuses == [502] * 20
        assert envelope["requests"] == 40 and envelope["errors"] == 20
        assert envelope["errorRate"] == 0.5
        assert envelope["state"] == "Unhealthy" and "unreachable" in envelope["reason"]
        assert ready.status_code == 503

        # Recovery on the same port.
        runtime = start_runtime(models["clf"], "clf", runtime_port, tmp_path / "runtime2.log")
        wait_status(f"{url}/readyz", 200, timeout=60)
        assert httpx.post(f"{url}/v2/models/clf/infer", content=data).status_code == 200
        envelope = wait_envelope(url, "Healthy")
        assert envelope["errors"] == 0
    finally:
        sidecar.stop()
        if runtime is not None:
            runtime.stop()


def test_thresholds_come_from_flags(models: dict[str, Path], tmp_path: Path) -> None:
    """A p99 threshold below any real latency turns a ready, error-free module Degraded."""
    runtime_port, port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    data, _ = oip.encode_request({"input": np.ones((1, 8), dtype=np.float32)})
    runtime = start_runtime(models["clf"], "clf", runtime_port, tmp_path / "runtime.log")
    sidecar = start_sidecar("clf", port, runtime_port, tmp_path / "sidecar.log",
                            "--degraded-p99-ms", "0.001")  # fmt: skip
    try:
        wait_status(f"{url}/readyz", 200, timeout=60)
        assert httpx.post(f"{url}/v2/models/clf/infer", content=data).status_code == 200
        envelope = httpx.get(f"{url}/envelope").json()
        assert envelope["state"] == "Degraded" and "p99 latency" in envelope["reason"]
        assert envelope["errorRate"] == 0.0
    finally:
        sidecar.stop()
        runtime.stop()
