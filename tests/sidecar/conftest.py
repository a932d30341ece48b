"""Process helpers for sidecar tests: real ``modulemesh runtime`` and ``modulemesh sidecar``
processes on 127.0.0.1, models from :mod:`modulemesh.zoo`, logs captured to files."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modulemesh import audit, zoo

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Proc:
    """A child process with its combined output in a file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.args = args
        self.log = log
        self._file = log.open("ab")
        self.popen = subprocess.Popen(
            args,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def audit_records(self) -> list[dict[str, object]]:
        return [r for line in self.output().splitlines() if (r := audit.parse_line(line))]

    def kill(self) -> None:
        """SIGKILL: a crash, no graceful drain."""
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._file.close()


def wait_status(url: str, status: int = 200, timeout: float = 30.0) -> httpx.Response:
    """Poll ``url`` until it answers ``status``; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2.0)
            if response.status_code == status:
                return response
            last = response.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise AssertionError(f"{url} did not answer {status} within {timeout}s (last: {last!r})")


def start_runtime(model: Path, name: str, port: int, log: Path, *extra: str) -> Proc:
    """Start a real runtime (not waiting for readiness)."""
    return Proc(
        [
            sys.executable, "-m", "modulemesh", "runtime",
            "--model", str(model), "--name", name,
            "--host", "127.0.0.1", "--port", str(port), *extra,
        ],
        log,
    )  # fmt: skip


def start_sidecar(
    module: str,
    port: int,
    upstream_port: int,
    log: Path,
    *extra: str,
    env: dict[str, str] | None = None,
) -> Proc:
    """Start a real sidecar and wait until it is live (not necessarily ready); ``env`` is added
    to its environment (e.g. ``OTEL_*``)."""
    proc = Proc(
        [
            sys.executable, "-m", "modulemesh", "sidecar",
            "--module", module, "--upstream", f"http://127.0.0.1:{upstream_port}",
            "--host", "127.0.0.1", "--port", str(port), "--poll-interval", "0.2", *extra,
        ],
        log,
        env,
    )  # fmt: skip
    wait_status(f"http://127.0.0.1:{port}/livez", 200, timeout=20)
    return proc


class Module:
    """A runtime and its sidecar, both real processes."""

    def __init__(self, runtime: Proc | None, sidecar: Proc, runtime_port: int, port: int) -> None:
        self.runtime = runtime
        self.sidecar = sidecar
        self.runtime_port = runtime_port
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.direct = f"http://127.0.0.1:{runtime_port}"

    def stop(self) -> None:
        self.sidecar.stop()
        if self.runtime is not None:
            self.runtime.stop()


@contextlib.contextmanager
def module(
    tmp: Path,
    model: Path,
    name: str,
    *sidecar_args: str,
    runtime_args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Iterator[Module]:
    """Runtime + sidecar for ``model``; yields once both are ready (``env``: the sidecar's)."""
    runtime_port, port = free_port(), free_port()
    runtime = start_runtime(model, name, runtime_port, tmp / f"{name}-runtime.log", *runtime_args)
    sidecar = start_sidecar(
        name, port, runtime_port, tmp / f"{name}-sidecar.log", *sidecar_args, env=env
    )
    mod = Module(runtime, sidecar, runtime_port, port)
    try:
        wait_status(f"{mod.url}/readyz", 200, timeout=60)
        yield mod
    finally:
        mod.stop()


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Zoo models: a plain classifier, a sure one and an unsure one, and a heavier MLP."""
    root = tmp_path_factory.mktemp("models")
    return {
        "clf": zoo.save(zoo.classifier(name="clf", features=8, classes=4), root / "clf.onnx"),
        "sure": zoo.save(
            zoo.classifier(name="sure", features=8, classes=4, temperature=0.001),
            root / "sure.onnx",
        ),
        "unsure": zoo.save(
            zoo.classifier(name="unsure", features=8, classes=4, temperature=1000.0),
            root / "unsure.onnx",
        ),
        "mlp": zoo.save(zoo.mlp(name="mlp", features=64, hidden=512, layers=3), root / "mlp.onnx"),
    }
