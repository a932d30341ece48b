"""Slow request bodies against real processes, over raw sockets: a client that sends its head
and then withholds or trickles the body gets 408 and a closed connection within the body
timeout from the router and from the runtime (both read whole bodies), and from a sidecar,
which streams the body to its runtime: there a runtime timeout while the client's body is still
arriving is the client's 408, not the module's 504, and the request does not count against
the module's health."""

from __future__ import annotations

import contextlib
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modulemesh import zoo
from modulemesh.localmesh.plan import free_port
from modulemesh.localmesh.process import Child

from .conftest import dead_endpoint, make_graph, module_spec, router

BODY_TIMEOUT = 1.0
SLACK = 3.0
"""Seconds past the body timeout within which the 408 must arrive (a busy CI machine)."""


def wait_ready(child: Child, url: str) -> None:
    """Poll ``url`` until it answers 200 (bounded)."""
    deadline = time.monotonic() + 60
    while True:
        assert child.alive(), f"{child.label} exited:\n{child.tail()}"
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1).status_code == 200:
                return
        assert time.monotonic() < deadline, f"{child.label} not ready:\n{child.tail()}"
        time.sleep(0.1)


@contextlib.contextmanager
def process(tmp: Path, label: str, args: list[str], ready: str) -> Iterator[None]:
    """A ``modulemesh`` child process, once ``ready`` (a URL) answers 200."""
    child = Child(label, [sys.executable, "-m", "modulemesh", *args], log_dir=tmp / "logs")
    try:
        wait_ready(child, ready)
        yield
    finally:
        child.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return zoo.save(zoo.classifier(features=8, classes=3, seed=1),
                    tmp_path_factory.mktemp("model") / "m.onnx")  # fmt: skip


def runtime_args(model: Path, port: int, *extra: str) -> list[str]:
    return ["runtime", "--model", str(model), "--name", "m", "--host", "127.0.0.1",
            "--port", str(port), *extra]  # fmt: skip


def post_head(port: int, length: int, path: str = "/v2/models/m/infer") -> socket.socket:
    """A raw connection that has sent a POST head announcing ``length`` body bytes."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
        f"content-length: {length}\r\n\r\n".encode()
    )
    return sock


def read_answer(sock: socket.socket, trickle: bool = False) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and how long that took; with ``trickle``
    one more body byte is sent every 0.2 s meanwhile."""
    started = time.monotonic()
    data = b""
    sock.settimeout(0.2)
    while time.monotonic() - started < 60:
        if trickle:
            with contextlib.suppress(OSError):
                sock.sendall(b" ")
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data, time.monotonic() - started


def assert_408(data: bytes, took: float) -> None:
    assert data.startswith(b"HTTP/1.1 408 "), data[:200]
    assert b"connection: close" in data.lower()
    assert b"request body not received in time" in data
    assert took < BODY_TIMEOUT + SLACK, f"answered after {took:.1f} s"


# --- router and runtime: whole-body readers ------------------------------------------------


@pytest.fixture(scope="module")
def router_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("router")
    graph = make_graph("body", [module_spec("m", tmp / "m.onnx")],
                       [{"name": "main", "type": "sequence", "steps": [{"module": "m"}]}])  # fmt: skip
    with router(
        tmp, graph, {"m": dead_endpoint()}, args=["--body-timeout", str(BODY_TIMEOUT)]
    ) as r:
        yield int(r.base.rsplit(":", 1)[1])


@pytest.mark.parametrize("trickle", [False, True], ids=["withheld", "trickled"])
def test_router_answers_a_slow_body_408_and_closes(router_port: int, trickle: bool) -> None:
    with post_head(router_port, 1000, "/v2/models/body/infer") as sock:
        sock.sendall(b'{"inputs": [')
        assert_408(*read_answer(sock, trickle))


def test_runtime_answers_a_slow_body_408_and_closes(model: Path, tmp_path: Path) -> None:
    port = free_port()
    args = runtime_args(model, port, "--body-timeout", str(BODY_TIMEOUT))
    with process(tmp_path, "runtime", args, f"http://127.0.0.1:{port}/v2/health/ready"):
        for trickle in (False, True):
            with post_head(port, 1000) as sock:
                sock.sendall(b'{"inputs": [')
                assert_408(*read_answer(sock, trickle))
        # and it keeps serving
        assert httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=5).status_code == 200


# --- sidecar: streams the body to its runtime ---------------------------------------------


def test_sidecar_answers_a_slow_body_408_not_504_and_keeps_the_module_healthy(
    model: Path, tmp_path: Path
) -> None:
    runtime_port, sidecar_port = free_port(), free_port()
    runtime = runtime_args(model, runtime_port)
    with process(tmp_path, "runtime", runtime, f"http://127.0.0.1:{runtime_port}/v2/health/ready"):
        sidecar = ["sidecar", "--module", "m", "--upstream", f"http://127.0.0.1:{runtime_port}",
                   "--host", "127.0.0.1", "--port", str(sidecar_port),
                   "--upstream-timeout", str(BODY_TIMEOUT)]  # fmt: skip
        base = f"http://127.0.0.1:{sidecar_port}"
        with process(tmp_path, "sidecar", sidecar, f"{base}/readyz"):
            # its runtime times out (1 s) while the client still trickles the body
            with post_head(sidecar_port, 100_000) as sock:
                sock.sendall(b'{"inputs": [')
                assert_408(*read_answer(sock, trickle=True))
            envelope = httpx.get(f"{base}/envelope", timeout=5).json()
            assert envelope["requests"] == 0 and envelope["errors"] == 0
            assert envelope["state"] == "Healthy", envelope


def test_sidecar_body_timeout_answers_a_withheld_body_408(model: Path, tmp_path: Path) -> None:
    runtime_port, sidecar_port = free_port(), free_port()
    runtime = runtime_args(model, runtime_port)
    with process(tmp_path, "runtime", runtime, f"http://127.0.0.1:{runtime_port}/v2/health/ready"):
        sidecar = ["sidecar", "--module", "m", "--upstream", f"http://127.0.0.1:{runtime_port}",
                   "--host", "127.0.0.1", "--port", str(sidecar_port),
                   "--body-timeout", str(BODY_TIMEOUT)]  # fmt: skip
        base = f"http://127.0.0.1:{sidecar_port}"
        with process(tmp_path, "sidecar", sidecar, f"{base}/readyz"):
            with post_head(sidecar_port, 1000) as sock:
                sock.sendall(b'{"inputs": [')
                assert_408(*read_answer(sock))
            envelope = httpx.get(f"{base}/envelope", timeout=5).json()
            assert envelope["requests"] == 0 and envelope["state"] == "Healthy", envelope


def test_a_runtime_that_gives_up_on_a_relayed_body_is_the_clients_408_not_a_502(
    model: Path, tmp_path: Path
) -> None:
    # The runtime's own body timeout (here 1 s, below the sidecar's 30 s) ends the relayed
    # stream: the sidecar answers the trickling client 408 and does not take its runtime for
    # unreachable (the envelope stays Healthy, the request out of the window).
    runtime_port, sidecar_port = free_port(), free_port()
    runtime = runtime_args(model, runtime_port, "--body-timeout", str(BODY_TIMEOUT))
    with process(tmp_path, "runtime", runtime, f"http://127.0.0.1:{runtime_port}/v2/health/ready"):
        sidecar = ["sidecar", "--module", "m", "--upstream", f"http://127.0.0.1:{runtime_port}",
                   "--host", "127.0.0.1", "--port", str(sidecar_port)]  # fmt: skip
        base = f"http://127.0.0.1:{sidecar_port}"
        with process(tmp_path, "sidecar", sidecar, f"{base}/readyz"):
            with post_head(sidecar_port, 100_000) as sock:
                sock.sendall(b'{"inputs": [')
                assert_408(*read_answer(sock, trickle=True))
            envelope = httpx.get(f"{base}/envelope", timeout=5).json()
            assert envelope["requests"] == 0 and envelope["state"] == "Healthy", envelope
            assert httpx.get(f"{base}/readyz", timeout=5).status_code == 200


def test_the_runtime_waits_longer_for_a_body_than_its_sidecar() -> None:
    # so that with the defaults the sidecar, which relays the body, is the one that decides
    from modulemesh.runtime.config import RuntimeConfig
    from modulemesh.sidecar.config import SidecarConfig

    assert RuntimeConfig(model="m").body_timeout > SidecarConfig(module="m").body_timeout
