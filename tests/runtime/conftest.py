"""Fixtures for runtime tests: zoo models on disk and real `modulemesh runtime` processes.

Every server is a real child process (``python -m modulemesh runtime``) on a free 127.0.0.1
port, stopped with SIGTERM at the end; its log is kept for assertions and failure reports.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modulemesh import zoo


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Runtime:
    """A `modulemesh runtime` child process and a client for it."""

    def __init__(
        self,
        args: list[str],
        tmp: Path,
        env: dict[str, str] | None = None,
        cpus: set[int] | None = None,
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / f"runtime-{self.port}.log"
        self._log = self.log_path.open("wb")
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modulemesh", "runtime", "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=full_env,
            # An affinity mask set before exec, so every thread of the runtime inherits it.
            preexec_fn=None if cpus is None else lambda: os.sched_setaffinity(0, cpus),
        )
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_live(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"runtime exited {self.proc.returncode}:\n{self.log}")
            try:
                if self.client.get("/v2/health/live").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"runtime not live after {timeout}s:\n{self.log}")

    def wait_ready(self, timeout: float = 30) -> None:
        self.wait_live(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.client.get("/v2/health/ready").status_code == 200:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"runtime not ready after {timeout}s:\n{self.log}")

    def wait_settled(self, timeout: float = 30) -> dict[str, Any]:
        """Wait until loading ended, ready or failed; return ``/stats``."""
        self.wait_live(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            stats: dict[str, Any] = self.client.get("/stats").json()
            busy = ("model is loading", "resolving model source", "loading model", "warming up")
            if stats["ready"] or stats["reason"] not in busy:
                return stats
            time.sleep(0.05)
        raise AssertionError(f"runtime did not settle after {timeout}s:\n{self.log}")

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.client.close()
        self._log.close()
        return self.proc.returncode


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The zoo models the runtime tests serve, saved once per session."""
    root = tmp_path_factory.mktemp("models")
    return {
        "multi": zoo.save(zoo.multi_input(), root / "multi.onnx"),
        "classifier": zoo.save(zoo.classifier(hidden=16), root / "classifier.onnx"),
        "pooler": zoo.save(zoo.pooler(), root / "pooler.onnx"),
        "small": zoo.save(zoo.small_mlp(name="small"), root / "small.onnx"),
        # 200 narrow layers: each call costs about 1 ms whatever its rows (a per-call cost).
        "deep": zoo.save(
            zoo.mlp(name="deep", features=256, hidden=8, layers=200), root / "deep.onnx"
        ),
        # Heavy enough that a 64-row request takes tens of milliseconds: backpressure, drain.
        "slow": zoo.save(
            zoo.mlp(name="slow", features=512, hidden=2048, layers=6), root / "slow.onnx"
        ),
    }


@pytest.fixture
def start_runtime(tmp_path: Path) -> Iterator[Callable[..., Runtime]]:
    """Start runtimes with the given CLI args; all are stopped (SIGTERM) at teardown."""
    started: list[Runtime] = []

    def start(
        *args: str,
        env: dict[str, str] | None = None,
        ready: bool = True,
        cpus: set[int] | None = None,
    ) -> Runtime:
        runtime = Runtime(list(args), tmp_path, env, cpus)
        started.append(runtime)
        if ready:
            runtime.wait_ready()
        return runtime

    yield start
    for runtime in started:
        runtime.stop()


@pytest.fixture(scope="module")
def multi_runtime(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Runtime]:
    """One shared runtime serving ``zoo.multi_input()`` with a 64 KiB body limit."""
    runtime = Runtime(
        ["--model", str(models["multi"]), "--max-body-bytes", "65536", "--max-delay-ms", "5"],
        tmp_path_factory.mktemp("multi"),
    )
    runtime.wait_ready()
    yield runtime
    runtime.stop()
