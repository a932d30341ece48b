"""What the proxy forwards, against a plain HTTP peer that echoes what it received: streamed
bodies both ways, trace context, hop-by-hop headers, deadlines and timeouts, loopback-only."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from modulemesh.envelope import parse_header

from .conftest import Proc, free_port, start_sidecar, wait_status

ECHO = Path(__file__).with_name("echo_upstream.py")


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("echo")
    upstream_port, port = free_port(), free_port()
    echo = Proc([sys.executable, str(ECHO), str(upstream_port)], tmp / "echo.log")
    sidecar = None
    try:
        wait_status(f"http://127.0.0.1:{upstream_port}/v2/health/ready")
        sidecar = start_sidecar("echo", port, upstream_port, tmp / "sidecar.log")
        wait_status(f"http://127.0.0.1:{port}/readyz")
        yield f"http://127.0.0.1:{port}"
    finally:
        if sidecar is not None:
            sidecar.stop()
        echo.stop()


def test_headers_trace_context_and_hop_by_hop(proxy: str) -> None:
    traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    response = httpx.post(
        f"{proxy}/v2/models/echo/infer?x=1",
        content=b'{"inputs":[]}',
        headers={"traceparent": traceparent, "tracestate": "k=v", "x-custom": "yes",
                 "connection": "keep-alive", "keep-alive": "timeout=5"},
    )  # fmt: skip
    assert response.status_code == 200
    seen = dict(response.json()["headers"])
    assert seen["traceparent"] == traceparent and seen["tracestate"] == "k=v"
    assert seen["x-custom"] == "yes" and "keep-alive" not in seen
    assert seen["host"].startswith("127.0.0.1:")
    assert response.json()["query"] == "x=1"
    envelope = parse_header(response.headers["x-modulemesh-envelope"])
    assert envelope is not None and envelope.module == "echo"  # the upstream's is not forwarded
    assert response.headers.get_list("x-modulemesh-envelope") == [
        response.headers["x-modulemesh-envelope"]
    ]


def test_streamed_request_body_arrives_intact(proxy: str) -> None:
    blocks = [bytes([i]) * 65536 for i in range(32)]  # 2 MiB, sent chunked (no length)
    response = httpx.post(f"{proxy}/v2/models/echo/infer", content=iter(blocks), timeout=30)
    answer = response.json()
    assert answer["size"] == 2 * 1024 * 1024
    assert answer["sha256"] == hashlib.sha256(b"".join(blocks)).hexdigest()


def test_binary_body_with_length_arrives_intact(proxy: str) -> None:
    body = bytes(range(256)) * 4096
    response = httpx.post(
        f"{proxy}/v2/models/echo/infer",
        content=body,
        headers={"content-type": "application/octet-stream",
                 "inference-header-content-length": "13"},
    )  # fmt: skip
    answer = response.json()
    assert answer["size"] == len(body) and answer["sha256"] == hashlib.sha256(body).hexdigest()
    assert dict(answer["headers"])["inference-header-content-length"] == "13"


def test_large_response_streams_through(proxy: str) -> None:
    total = 16 * 1024 * 1024
    digest = hashlib.sha256()
    got = 0
    with httpx.stream("GET", f"{proxy}/v2/big/{total}", timeout=30) as response:
        assert response.status_code == 200
        assert "x-modulemesh-envelope" in response.headers
        for chunk in response.iter_raw():
            digest.update(chunk)
            got += len(chunk)
    assert got == total
    block = bytes(range(256)) * 256
    assert digest.hexdigest() == hashlib.sha256(block * (total // len(block))).hexdigest()


def test_deadline_header_bounds_the_upstream_call(proxy: str) -> None:
    response = httpx.post(
        f"{proxy}/v2/slow", content=b"{}", headers={"x-modulemesh-deadline-ms": "200"}, timeout=10
    )
    assert response.status_code == 504
    assert "echo" in response.json()["error"]
    envelope = httpx.get(f"{proxy}/envelope").json()
    assert envelope["errors"] >= 1


def test_sidecar_refuses_a_non_loopback_upstream(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "modulemesh", "sidecar", "--module", "m",
         "--upstream", "http://10.1.2.3:8081", "--port", str(free_port())],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert result.returncode == 2 and "loopback" in result.stderr
